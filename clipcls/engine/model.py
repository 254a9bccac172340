"""A loaded open_clip model: build it (cache first, then download), encode images and texts."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from clipcls.engine.fastpaths import (
    can_truncate_text,
    encode_text_truncated,
    length_batches,
    normalized_batch,
    prepare_image,
    split_preprocess,
)
from clipcls.engine.hardware import pick_device, pick_precision, plan_threads
from clipcls.engine.sources import (
    ModelSource,
    cache_key,
    is_local,
    load_failure,
    resolve_source,
    weights_identity,
)
from clipcls.engine.text_packages import check_text_packages
from clipcls.errors import ClipclsError, ModelLoadError
from clipcls.pipeline import EmbedPlan, ModelInfo
from clipcls.settings import ModelSettings

TEXT_TOKENS = 2048  # tokens per text batch (rows x padded length): small working set, no waste
INIT_FUNCTIONS = (
    "normal_",
    "uniform_",
    "trunc_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "xavier_uniform_",
    "xavier_normal_",
    "constant_",
    "zeros_",
    "ones_",
    "orthogonal_",
)


@contextlib.contextmanager
def _quiet_loading(offline: bool) -> Iterator[None]:
    """Keep open_clip's and the hub's log lines off stderr; serve cached files only if offline."""
    from huggingface_hub import constants

    hub_logger = logging.getLogger("huggingface_hub")
    saved = (constants.HF_HUB_OFFLINE, hub_logger.level)
    # open_clip calls logging.error(), which would otherwise configure the root logger for us.
    guard = logging.NullHandler()
    logging.root.addHandler(guard)
    hub_logger.setLevel(logging.CRITICAL)
    constants.HF_HUB_OFFLINE = offline or saved[0]
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, level = saved
        hub_logger.setLevel(level)
        logging.root.removeHandler(guard)


@contextlib.contextmanager
def _skip_random_init() -> Iterator[None]:
    """Skip the random initialization of weights that the checkpoint replaces anyway.

    Every load is strict and requires pretrained weights, so each parameter is overwritten;
    initializing a ViT-B-32 at random first costs about a second.
    """
    import torch

    names = [n for n in INIT_FUNCTIONS if hasattr(torch.nn.init, n)]
    saved = {name: getattr(torch.nn.init, name) for name in names}
    for name in names:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def _hub_unreachable() -> str | None:
    """Why the model hub cannot be reached, or None; a failed name lookup answers at once."""
    from huggingface_hub import constants

    host = urlsplit(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError as error:
        return f"{host} cannot be reached ({error.strerror or error}: no network?)"
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    first = text.splitlines()[0][:300] if text else ""
    return f"{type(error).__name__}: {first}" if len(first) < 20 else first


def _build(
    source: ModelSource, device: str, precision: str, cache_dir: str, offline: bool
) -> tuple[Any, Any, Any]:
    """Create (model, eval preprocessing, tokenizer) through open_clip."""
    import open_clip

    with _quiet_loading(offline), _skip_random_init():
        model, _, preprocess = open_clip.create_model_and_transforms(
            source.name,
            pretrained=source.pretrained,
            precision=precision,
            device=device,
            force_quick_gelu=source.quick_gelu,
            cache_dir=cache_dir,
            require_pretrained=True,
        )
        tokenizer = open_clip.get_tokenizer(source.name, cache_dir=cache_dir)
    return model, preprocess, tokenizer


def _load(
    source: ModelSource, settings: ModelSettings, device: str, precision: str
) -> tuple[Any, Any, Any]:
    """Build from the cache first, so a model downloaded once loads with no network at all."""
    check_text_packages(source.name)
    cache = settings.resolved_cache_dir()
    build = partial(_build, source, device, precision, str(cache))
    try:
        return build(offline=True)
    except Exception as cached_error:  # open_clip raises many types for "no usable weights"
        local = is_local(source)
        if local or settings.offline:
            why = _first_line(cached_error) if local else "--offline is set"
            raise load_failure(source, cache, why) from cached_error
        unreachable = _hub_unreachable()
        if unreachable:
            raise load_failure(source, cache, unreachable) from cached_error
    try:
        return build(offline=False)
    except Exception as error:
        raise load_failure(source, cache, f"the download failed: {_first_line(error)}") from error


def image_plan(
    weights: str,
    settings: ModelSettings,
    model: Any,
    preprocess: Any,
    precision: str,
    device: str,
) -> EmbedPlan:
    """How a model's images are decoded and cached (threads are the caller's to add); weights
    is the source's weights_identity."""
    fast = split_preprocess(preprocess)
    size = fast.size if fast else _input_size(model)
    # Decode large JPEGs at the smallest libjpeg scale (1/2, 1/4, 1/8) still covering the
    # input size; the bicubic resize then finishes the job (benchmarks/speed.py measures
    # the agreement with a full decode).
    draft = None if settings.exact_decode else size
    return EmbedPlan(
        draft_size=draft,
        max_megapixels=settings.max_megapixels,
        image_cache_key=cache_key(weights, precision, device, preprocess, draft),
        device=device,
    )


def source_weights(source: ModelSource, settings: ModelSettings) -> str:
    """The source's weights_identity, its file digests remembered in the settings' cache."""
    try:
        return weights_identity(source, settings.resolved_cache_dir())
    except OSError as error:
        raise load_failure(source, settings.resolved_cache_dir(), str(error)) from None


def load_preprocess(source: ModelSource, settings: ModelSettings) -> tuple[Any, Any]:
    """(model, eval preprocessing) with the model on torch's meta device: the architecture and
    its preprocessing exactly as a load makes them, without holding any weights."""
    import torch

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "copying into a meta parameter is a no-op", per tensor
        model, preprocess, _ = _load(source, settings, "meta", "fp32")
    return model, preprocess


class ClipModel:
    """A loaded open_clip model with its preprocessing and tokenizer, answering in numpy."""

    def __init__(self, settings: ModelSettings) -> None:
        import torch

        source = resolve_source(settings)
        device = pick_device(settings.device)
        precision = pick_precision(settings.precision, device)
        self.weights = source_weights(source, settings)
        model, preprocess, self._tokenizer = _load(source, settings, device, precision)
        if source_weights(source, settings) != self.weights:  # the bytes loaded may be neither
            raise load_failure(source, settings.resolved_cache_dir(), "its files changed meanwhile")
        self._torch = torch
        self._model = model.eval()
        self._preprocess = preprocess
        self._fast = split_preprocess(preprocess)
        self._truncate_text = can_truncate_text(model)
        self._device = torch.device(device)
        threads = plan_threads(device, settings.workers)
        if device == "cpu":
            torch.set_num_threads(threads.torch_threads)
        self.plan = replace(
            image_plan(self.weights, settings, model, preprocess, precision, device),
            decode_workers=threads.decode_workers,
            overlap_decode=device != "cpu",  # on the CPU, decoding and compute take turns
            text_cache_key=cache_key(self.weights, precision, device, "text", self._truncate_text),
        )
        self._input_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        self.source = source
        self.info = ModelInfo(source.name, source.pretrained, device, precision, source.notices)
        self.logit_scale = float(model.logit_scale.exp().item())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = None if bias is None else float(bias.item())

    def prepare(self, image: Image.Image) -> Any:
        """Resize and crop one RGB image: a uint8 array (or a tensor for unusual transforms)."""
        return prepare_image(self._fast, self._preprocess, image)

    def encode_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        """Embed prepared images: (n, H, W, 3) -> (n, dim), L2-normalized, float32."""
        torch = self._torch
        if self._fast is not None:
            batch = normalized_batch(self._fast, prepared, self._device)
        else:
            batch = torch.stack(list(prepared))
        batch = batch.to(self._device, dtype=self._input_dtype)
        with torch.inference_mode(), self._memory_errors(f"a batch of {len(prepared)} images"):
            features = self._model.encode_image(batch)
        return _unit_rows(features)

    @contextlib.contextmanager
    def _memory_errors(self, what: str) -> Iterator[None]:
        """Turn the device running out of memory into one line that says what to change."""
        try:
            yield
        except RuntimeError as error:  # CUDA raises OutOfMemoryError; the CPU and MPS plain ones
            text = str(error)
            if not isinstance(error, self._torch.cuda.OutOfMemoryError) and not any(
                sign in text for sign in ("out of memory", "can't allocate memory")
            ):
                raise
            raise ClipclsError(
                f"out of {self.info.device} memory embedding {what}: pass a smaller --batch-size"
            ) from None

    def encode_texts(self, texts: Sequence[str], truncate: bool = True) -> np.ndarray:
        """Embed texts: (n,) -> (n, dim), each L2-normalized, float32.

        Prompts are sorted by token length and batched so each batch is cut to its longest
        real prompt with little padding.
        """
        torch = self._torch
        tokens = self._tokenizer(list(texts))
        truncate = truncate and self._truncate_text
        lengths = (tokens != 0).sum(dim=-1).tolist() if truncate else [tokens.shape[1]] * len(texts)
        out = np.zeros((len(texts), 0), dtype=np.float32)
        with torch.inference_mode():
            for group in length_batches(lengths, TEXT_TOKENS):
                rows = torch.tensor(group)
                batch = tokens[rows].to(self._device)
                if truncate:
                    features = encode_text_truncated(self._model, batch)
                else:
                    features = self._model.encode_text(batch)
                features = _unit_rows(features)
                if out.shape[1] == 0:
                    out = np.zeros((len(texts), features.shape[1]), dtype=np.float32)
                out[rows.numpy()] = features
        return out

    def torch_parts(self) -> tuple[Any, Any, Any]:
        """(open_clip model, eval preprocessing, tokenizer), for the ONNX exporter."""
        return self._model, self._preprocess, self._tokenizer

    def export(self, folder: Path) -> None:
        """Write a self-contained local-dir: folder (config with preprocessing + safetensors)."""
        import open_clip
        from safetensors.torch import save_file

        model_cfg = dict(open_clip.get_model_config(self.source.name) or {})
        if not model_cfg:
            raise ModelLoadError(f"cannot find the architecture config of {self.source.name}")
        if self.source.quick_gelu:
            model_cfg["quick_gelu"] = True
        preprocess_cfg = open_clip.get_model_preprocess_cfg(self._model)
        config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
        weights = {
            k: v.detach().float().cpu().contiguous() for k, v in self._model.state_dict().items()
        }
        folder.mkdir(parents=True, exist_ok=True)
        # Write under temporary names and rename last: a half-written folder never looks complete.
        partial_weights = folder / "open_clip_model.safetensors.partial"
        save_file(weights, str(partial_weights))
        partial_weights.chmod(0o644)  # safetensors writes 0600; the folder is meant to be shared
        (folder / "open_clip_config.json.partial").write_text(json.dumps(config, indent=2) + "\n")
        partial_weights.replace(folder / "open_clip_model.safetensors")
        (folder / "open_clip_config.json.partial").replace(folder / "open_clip_config.json")


def _unit_rows(features: Any) -> np.ndarray:
    """L2-normalize in float32, whatever precision the tower ran in."""
    rows = features.float().cpu().numpy()
    return np.asarray(rows / np.linalg.norm(rows, axis=1, keepdims=True), dtype=np.float32)


def _input_size(model: Any) -> int:
    size = getattr(getattr(model, "visual", None), "image_size", 224)
    return int(max(size) if isinstance(size, list | tuple) else size)
