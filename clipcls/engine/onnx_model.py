"""A model run by ONNX Runtime from an export folder (`clipcls models export ... --onnx`), with
no torch, torchvision or open_clip in the process: numpy/PIL preprocessing, a torch-free
tokenizer, and a session per tower, each opened on first use (a run whose prompts are cached
never opens the text tower).

The towers answer as ClipModel's do: L2-normalized float32 rows; texts sorted by token length
and each batch cut to its longest real prompt when the tower is causal. The embeddings are
keyed by the export's own identity (the digest of its files), never mixed with torch's.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipcls.engine.fastpaths import length_batches
from clipcls.engine.hardware import plan_threads
from clipcls.engine.onnx_folder import MANIFEST, OnnxFolder, prepared_folder, read_folder
from clipcls.engine.onnx_sessions import onnxruntime, open_session, pick_providers
from clipcls.engine.sources import LOCAL_DIR, RANDOM_NOTICE, cache_key
from clipcls.errors import UnusableExport, UsageError
from clipcls.pipeline import EmbedPlan, ModelInfo
from clipcls.settings import ModelSettings, Precision

TEXT_TOKENS = 2048  # tokens per text batch, as the torch path
IMAGE_ROWS = 64  # images per session run: bounds the activations of one call


def export_folder(settings: ModelSettings) -> tuple[Path, str]:
    """The export folder settings name (local-dir:DIR), or the one `clipcls models prepare`
    made for the model they name; and the model name outputs record."""
    from clipcls.engine.onnx_folder import is_onnx_folder
    from clipcls.engine.runtimes import expected_identity

    if settings.model.startswith(LOCAL_DIR):
        folder = Path(settings.model.removeprefix(LOCAL_DIR)).expanduser()
        if is_onnx_folder(folder):
            return folder, settings.model
    identity = expected_identity(settings)
    cache = settings.resolved_cache_dir()
    prepared = prepared_folder(cache, identity) if identity else None
    if prepared is None or not (prepared / MANIFEST).is_file():
        raise UsageError(
            f"no ONNX export of {settings.model} in the cache at {cache}: make one with "
            f"`clipcls models prepare {settings.model}`, or use --runtime torch"
        )
    return prepared, settings.model


class OnnxModel:
    """An export folder's towers on ONNX Runtime, answering in numpy like ClipModel."""

    def __init__(self, settings: ModelSettings) -> None:
        from clipcls.engine.pixels import Pixels

        if settings.precision not in (Precision.AUTO, Precision.FP32):
            raise UsageError(
                f"the ONNX runtime runs fp32 exports: --precision {settings.precision.value} "
                "needs --runtime torch"
            )
        root, name = export_folder(settings)
        cache = settings.resolved_cache_dir()
        self._folder: OnnxFolder = read_folder(root, memo=cache)
        onnxruntime()  # a missing onnxruntime is said now, not at the first batch
        manifest = self._folder.manifest
        device = "cpu" if settings.device.value == "auto" else settings.device.value
        self._providers = pick_providers(device)
        self._threads = plan_threads("cpu", settings.workers).torch_threads
        self._cache = cache if _writable(cache) else None
        self._sessions: dict[str, Any] = {}
        self._pixels = Pixels(self._folder.preprocess)
        self._tokenizer: Any = None
        self.weights = self._folder.identity
        text = self._folder.text
        self._cut = bool(text.get("cut"))
        draft = None if settings.exact_decode else self._pixels.size
        preprocess = sorted(self._folder.preprocess.items())
        self.plan = EmbedPlan(
            draft_size=draft,
            max_megapixels=settings.max_megapixels,
            image_cache_key=cache_key(self.weights, "fp32", device, preprocess, draft),
            text_cache_key=cache_key(self.weights, "fp32", device, "text", self._cut),
            decode_workers=plan_threads("cpu", settings.workers).decode_workers,
            device=device,
        )
        notices = (RANDOM_NOTICE.format(name=name),) if manifest.get("random_weights") else ()
        pretrained = None if name.startswith(LOCAL_DIR) else manifest.get("pretrained")
        self.info = ModelInfo(name, pretrained, device, "fp32", notices, runtime="onnx")
        # Opened now, not at the first batch: an export this onnxruntime cannot run is refused
        # before a run writes anything (0.02-0.05 s with this machine's optimized copy).
        self._session("image")
        self.logit_scale = float(manifest["logit_scale"])
        bias = manifest.get("logit_bias")
        self.logit_bias = None if bias is None else float(bias)

    def _session(self, tower: str) -> Any:
        if tower not in self._sessions:
            graph = self._folder.path(self._folder.manifest[tower]["file"])
            self._sessions[tower] = open_session(
                graph, self.weights, self._cache, self._providers, self._threads
            )
        return self._sessions[tower]

    def prepare(self, image: Image.Image) -> np.ndarray:
        """Resize and crop one RGB image as the model's preprocessing says: uint8 (H, W, 3)."""
        return self._pixels.prepare(image)

    def encode_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        """Embed prepared images: (n, H, W, 3) uint8 -> (n, dim), L2-normalized, float32."""
        section = self._folder.manifest["image"]
        session = self._session("image")
        parts = []
        for start in range(0, len(prepared), IMAGE_ROWS):
            batch = self._pixels.normalize(prepared[start : start + IMAGE_ROWS])
            parts.append(np.asarray(session.run([section["output"]], {section["input"]: batch})[0]))
        return _unit_rows(np.concatenate(parts))

    def encode_texts(self, texts: Sequence[str], truncate: bool = True) -> np.ndarray:
        """Embed texts: (n,) -> (n, dim), each L2-normalized, float32; a causal tower runs each
        batch cut to its longest prompt (the rest is padding the mask hides)."""
        tokens = self._tokens(texts)
        section = self._folder.text
        cut = truncate and self._cut
        lengths = _ends(tokens, section) if cut else [tokens.shape[1]] * len(texts)
        session = self._session("text")
        out = np.zeros((len(texts), 0), dtype=np.float32)
        for group in length_batches(lengths, TEXT_TOKENS):
            rows = np.asarray(group)
            width = max(lengths[i] for i in group) if cut else tokens.shape[1]
            batch = np.ascontiguousarray(tokens[rows, :width])
            features = _unit_rows(session.run([section["output"]], {section["input"]: batch})[0])
            if out.shape[1] == 0:
                out = np.zeros((len(texts), features.shape[1]), dtype=np.float32)
            out[rows] = features
        return out

    def _tokens(self, texts: Sequence[str]) -> np.ndarray:
        if self._tokenizer is None:
            self._tokenizer = _tokenizer(self._folder)
        return np.asarray(self._tokenizer(list(texts)), dtype=np.int64)

    def export(self, folder: Path) -> None:
        """Write a copy of the export folder (a self-contained local-dir: folder)."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
        try:
            for name in (*self._folder.manifest["files"], MANIFEST):
                shutil.copyfile(self._folder.path(name), staging / name)
            folder.rmdir() if folder.is_dir() else None
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _tokenizer(folder: OnnxFolder) -> Any:
    spec = folder.tokenizer
    path = folder.path(str(spec.get("file")))
    if spec.get("kind") == "bpe":
        from clipcls.engine.bpe import BpeTokenizer

        return BpeTokenizer(
            path, context_length=int(spec["context_length"]), clean=spec.get("clean", "lower")
        )
    if spec.get("kind") == "hf":
        from clipcls.engine.hf_tokens import HfTokenizer

        return HfTokenizer(
            path,
            context_length=int(spec["context_length"]),
            clean=spec.get("clean", "whitespace"),
            strip_sep_token=bool(spec.get("strip_sep_token", False)),
            pad_id=int(spec.get("pad_id", 0)),
        )
    raise UnusableExport(f"{folder.root / MANIFEST}: unknown tokenizer kind {spec.get('kind')!r}")


def _ends(tokens: np.ndarray, text: dict[str, Any]) -> list[int]:
    """Each prompt's length through its end-of-text token, where the tower pools."""
    if text.get("pool") == "eos" and text.get("eos_id") is not None:
        hits = tokens == int(text["eos_id"])
        ends = np.where(hits.any(axis=1), hits.argmax(axis=1), tokens.shape[1] - 1)
    else:  # argmax: the end-of-text token has the largest id
        ends = tokens.argmax(axis=1)
    return [max(2, int(end) + 1) for end in ends]


def _unit_rows(features: np.ndarray) -> np.ndarray:
    rows = np.asarray(features, dtype=np.float32)
    return np.asarray(rows / np.linalg.norm(rows, axis=1, keepdims=True), dtype=np.float32)


def _writable(folder: Path) -> bool:
    from clipcls.settings import writable

    return writable(folder / "onnx-optimized")
