"""The only module that touches torch and open_clip: build a model, encode images and texts."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from clipcls.errors import ClipclsError, ModelLoadError, UsageError
from clipcls.identity import WEIGHT_FILES
from clipcls.settings import DEFAULT_PRETRAINED, Device, ModelSettings, Precision
from clipcls.towers import (
    can_truncate_text,
    cpu_has_fast_bf16,
    encode_text_truncated,
    length_batches,
    normalized_batch,
    plan_threads,
    split_preprocess,
    to_uint8,
)

SCHEMAS = ("hf-hub:", "local-dir:")
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
CACHE_VERSION = "clipcls-1"  # bump when embeddings computed for the same inputs would change


@dataclass(frozen=True)
class ModelSource:
    """Where a model's architecture and weights come from, resolved from the settings."""

    name: str  # what open_clip.create_model takes: an architecture or a schema'd id
    pretrained: str | None  # a tag, a checkpoint file, or None for schema'd models
    quick_gelu: bool = False
    notices: tuple[str, ...] = ()

    @property
    def is_file(self) -> bool:
        return self.pretrained is not None and os.path.isfile(self.pretrained)


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, for notices and for results that must be reproducible."""

    model: str
    pretrained: str | None
    device: str
    precision: str
    notices: tuple[str, ...] = field(default=())


def _has_schema(name: str) -> bool:
    return name.startswith(SCHEMAS)


def resolve_source(settings: ModelSettings) -> ModelSource:
    """Check the model name and pretrained tag or file, and pick the activation they need."""
    import open_clip

    if _has_schema(settings.model):
        if settings.pretrained is not None:
            raise UsageError(
                f"--pretrained cannot be used with {settings.model}: "
                "hf-hub: and local-dir: models bring their own weights"
            )
        return ModelSource(settings.model, None)
    arch, _, tag = settings.model.partition(":")  # "ViT-B-32:openai" as open_clip lists them
    if tag and settings.pretrained is not None:
        raise UsageError(f"--model {settings.model} already names weights; drop --pretrained")
    arch = arch.replace("/", "-")
    if arch not in open_clip.list_models():
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `clipcls models`"
        raise UsageError(f"unknown model {settings.model!r}{hint}")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    pretrained = tag or settings.pretrained
    pretrained = pretrained or (DEFAULT_PRETRAINED if DEFAULT_PRETRAINED in tags else None)
    if pretrained is None:
        if not tags:
            raise UsageError(f"open_clip knows no weights for {arch}: give --pretrained FILE")
        pretrained = tags[0]
    if os.path.isfile(pretrained):
        notice = (
            f"weights from file {pretrained}: image preprocessing falls back to "
            f"{arch}'s defaults (mean, std, resize), which may not match how they were trained"
        )
        return ModelSource(arch, pretrained, notices=(notice,))
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        close = difflib.get_close_matches(pretrained, tags, n=3, cutoff=0.3)
        close = close or [t for t in tags if t.startswith(pretrained.split("_")[0])][:3]
        hint = f"did you mean {', '.join(close)}?" if close else f"tags: {', '.join(tags[:5])}"
        raise UsageError(
            f"{arch} has no pretrained tag or file {pretrained!r}; {hint} "
            f"(`clipcls models --filter {arch}` lists all {len(tags)})"
        )
    # Tags trained with QuickGELU must get that activation; a GELU model would load silently wrong.
    return ModelSource(arch, pretrained, quick_gelu=bool(cfg.get("quick_gelu", False)))


def pick_device(requested: Device) -> str:
    """Resolve auto to cuda, then mps, then cpu; refuse a device this torch cannot use."""
    import torch

    has_cuda = torch.cuda.is_available()
    has_mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if requested is Device.AUTO:
        return "cuda" if has_cuda else "mps" if has_mps else "cpu"
    if requested is Device.CUDA and not has_cuda:
        raise UsageError(_no_cuda(torch))
    if requested is Device.MPS and not has_mps:
        raise UsageError("--device mps: Apple MPS is not available on this machine")
    return str(requested.value)


def _no_cuda(torch: Any) -> str:
    """Why --device cuda cannot work here: no GPU visible, or a torch built without CUDA."""
    if torch.version.cuda is None:
        return (
            "--device cuda: this torch is a CPU-only build; install a CUDA build of torch "
            "(see pytorch.org) to use a GPU"
        )
    return (
        f"--device cuda: no GPU is visible (torch {torch.__version__} has CUDA "
        f"{torch.version.cuda}; check the driver with nvidia-smi and $CUDA_VISIBLE_DEVICES)"
    )


def pick_precision(requested: Precision, device: str) -> str:
    """Resolve auto: fp16 on CUDA, bf16 on CPUs with fast bf16, else fp32; no fp16 on the CPU.

    bf16 weights keep image embeddings within cosine 0.997 of fp32 (benchmarks/speed.py
    measures it) and run 3-4x faster on AMX CPUs.
    """
    if requested is Precision.AUTO:
        if device == "cuda":
            return "fp16"
        return "bf16" if device == "cpu" and cpu_has_fast_bf16() else "fp32"
    if requested is Precision.FP16 and device == "cpu":
        raise UsageError("--precision fp16 is not supported on the CPU: use fp32 or bf16")
    return str(requested.value)


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


def _failure(source: ModelSource, cache: Path, why: str) -> ModelLoadError:
    if source.name.startswith("local-dir:"):
        return ModelLoadError(f"cannot load {source.name}: {why}")
    if source.is_file:
        return ModelLoadError(
            f"cannot load checkpoint {source.pretrained} into {source.name}: {why}"
        )
    what = source.name if source.pretrained is None else f"{source.name} ({source.pretrained})"
    return ModelLoadError(
        f"cannot load weights for {what}: not in the cache at {cache}, and {why}. Ways out: "
        "connect to the network once so they download into the cache; or use --model "
        "local-dir:PATH (see `clipcls models export`); or --pretrained FILE"
    )


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
    cache = settings.resolved_cache_dir()
    build = partial(_build, source, device, precision, str(cache))
    try:
        return build(offline=True)
    except Exception as cached_error:  # open_clip raises many types for "no usable weights"
        is_local = source.is_file or source.name.startswith("local-dir:")
        if is_local or settings.offline:
            why = _first_line(cached_error) if is_local else "--offline is set"
            raise _failure(source, cache, why) from cached_error
        unreachable = _hub_unreachable()
        if unreachable:
            raise _failure(source, cache, unreachable) from cached_error
    try:
        return build(offline=False)
    except Exception as error:
        raise _failure(source, cache, f"the download failed: {_first_line(error)}") from error


class ClipModel:
    """A loaded open_clip model with its preprocessing and tokenizer, answering in numpy."""

    def __init__(self, settings: ModelSettings) -> None:
        import torch

        source = resolve_source(settings)
        device = pick_device(settings.device)
        precision = pick_precision(settings.precision, device)
        model, preprocess, self._tokenizer = _load(source, settings, device, precision)
        self._torch = torch
        self._model = model.eval()
        self._preprocess = preprocess
        self._fast = split_preprocess(preprocess)
        self._truncate_text = can_truncate_text(model)
        self._device = torch.device(device)
        self.thread_plan = plan_threads(device, settings.workers)
        if device == "cpu":
            torch.set_num_threads(self.thread_plan.torch_threads)
        self.decode_workers = self.thread_plan.decode_workers
        self.overlap_decode = device != "cpu"  # on the CPU, decoding and compute take turns
        size = self._fast.size if self._fast else _input_size(model)
        # Decode large JPEGs at the smallest libjpeg scale (1/2, 1/4, 1/8) still covering the
        # input size; the bicubic resize then finishes the job (benchmarks/speed.py measures
        # the agreement with a full decode).
        self.draft_size = None if settings.exact_decode else size
        self.max_megapixels = settings.max_megapixels
        self.cache_key = _cache_key(source, precision, device, preprocess, self.draft_size)
        self.text_cache_key = _cache_key(source, precision, device, "text", self._truncate_text)
        self._input_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        self.source = source
        self.info = ModelInfo(source.name, source.pretrained, device, precision, source.notices)
        self.logit_scale = float(model.logit_scale.exp().item())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = None if bias is None else float(bias.item())

    def prepare(self, image: Image.Image) -> Any:
        """Resize and crop one RGB image: a uint8 array (or a tensor for unusual transforms)."""
        if self._fast is not None:
            return to_uint8(self._fast, image)
        return self._preprocess(image)

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


def _file_identity(path: str) -> str:
    try:
        stat = os.stat(path)
    except OSError:
        return path
    return f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"


def _cache_key(source: ModelSource, precision: str, device: str, stage: Any, extra: Any) -> str:
    """What embeddings depend on: weights, precision, device kind, preprocessing (or "text")."""
    weights = source.pretrained or ""
    if source.is_file:
        weights = _file_identity(weights)
    elif source.name.startswith("local-dir:"):
        folder = source.name.removeprefix("local-dir:")
        weights = ",".join(_file_identity(str(p)) for p in sorted(Path(folder).glob("*")))
    parts = [
        CACHE_VERSION,
        source.name,
        weights,
        precision,
        device.split(":")[0],
        repr(stage),
        repr(extra),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CatalogEntry:
    """One architecture and pretrained tag open_clip knows."""

    model: str
    pretrained: str
    is_default: bool
    cached: bool


def _is_cached(cfg: dict[str, Any], cache_dir: Path) -> bool:
    from huggingface_hub import try_to_load_from_cache

    # "org/repo/" means the default file names; "org/repo/file.bin" names one file.
    repo_id, filename = os.path.split(str(cfg.get("hf_hub", "")))
    if not repo_id:
        return False
    names = [filename] if filename else list(WEIGHT_FILES)
    if filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    return any(
        isinstance(try_to_load_from_cache(repo_id, name, cache_dir=str(cache_dir)), str)
        for name in names
    )


def catalog(settings: ModelSettings, text_filter: str = "") -> list[CatalogEntry]:
    """Architectures and tags open_clip knows, marking the default and what is cached."""
    import open_clip

    cache_dir = settings.resolved_cache_dir()
    needle = text_filter.casefold()
    entries = []
    for arch, tag in open_clip.list_pretrained():
        if needle and needle not in f"{arch} {tag}".casefold():
            continue
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        is_default = arch == settings.model and tag == (settings.pretrained or DEFAULT_PRETRAINED)
        cached = _is_cached(cfg, cache_dir)
        entries.append(CatalogEntry(arch, tag, is_default, cached))
    return entries
