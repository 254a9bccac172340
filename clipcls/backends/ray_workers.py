"""What runs on Ray's workers: decoding in CPU tasks (no weights held), and actors that load the
model once and embed (and score) batches with the local engine's own code, decoding themselves
where there is no decoding stage."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image

from clipcls.cache import EmbeddingCache
from clipcls.classify import Classifier
from clipcls.filekey import FileKey
from clipcls.labels import Label
from clipcls.output.rows import clean_text
from clipcls.pathtext import text_to_path
from clipcls.pipeline import EmbeddedBatch, EmbedPlan, embed_paths, look_up, prepare_path
from clipcls.prompts import TemplateSet
from clipcls.settings import ModelSettings

COLUMNS = ("path", "load", "error", "key", "pixels", "shape", "cached")


class Preparer:
    """A model's decoding and preprocessing, built on the meta device: no weights in memory."""

    def __init__(self, settings: ModelSettings, device: str) -> None:
        from clipcls.engine.fastpaths import split_preprocess
        from clipcls.engine.hardware import pick_precision
        from clipcls.engine.model import image_plan, load_preprocess, source_weights
        from clipcls.engine.sources import resolve_source

        source = resolve_source(settings)
        model, self._preprocess = load_preprocess(source, settings)
        self._fast = split_preprocess(self._preprocess)
        precision = pick_precision(settings.precision, device)
        weights = source_weights(source, settings)
        self.plan: EmbedPlan = image_plan(
            weights, settings, model, self._preprocess, precision, device
        )

    @property
    def sends_pixels(self) -> bool:
        """True where the preprocessing ends in uint8 pixels the actors can take as they are."""
        return self._fast is not None

    def prepare(self, image: Image.Image) -> Any:
        from clipcls.engine.fastpaths import prepare_image

        return prepare_image(self._fast, self._preprocess, image)


_WORKER_STATE: dict[Any, tuple[Preparer, EmbeddingCache | None]] = {}


def decode(batch: dict[str, Any], settings: ModelSettings, device: str, use_cache: bool) -> Any:
    """A Ray CPU task: look each file up in this node's cache, decode and preprocess the rest.

    Pixels travel as raw uint8 bytes with their shape; a cached embedding as float32 bytes.
    """
    key = (settings, device, use_cache)
    if key not in _WORKER_STATE:  # once per worker process: Ray reuses its task workers
        cache = EmbeddingCache(settings.resolved_cache_dir()) if use_cache else None
        _WORKER_STATE[key] = (Preparer(settings, device), cache)
    preparer, cache = _WORKER_STATE[key]
    loads = [text_to_path(str(p)) for p in batch["load"]]
    model = preparer.plan.image_cache_key or ""
    chunk = look_up(loads, cache, model, preparer.plan.max_megapixels)
    out: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    rows = zip(batch["path"], batch["load"], loads, chunk.keys, strict=True)
    for given, sent, load, file_key in rows:
        hit = chunk.hits.get(file_key.path) if file_key is not None else None
        error, pixels = None, None
        if hit is None and preparer.sends_pixels:
            prepared = prepare_path(preparer, load)
            error, pixels = prepared.error, prepared.tensor
        out["path"].append(str(given))
        out["load"].append(str(sent))
        out["error"].append(clean_text(error or ""))
        out["key"].append(model)
        out["pixels"].append(b"" if pixels is None else np.ascontiguousarray(pixels).tobytes())
        out["shape"].append([] if pixels is None else list(pixels.shape))
        out["cached"].append(b"" if hit is None else np.asarray(hit, np.float32).tobytes())
    return out


class _Embedding:
    """The actors' shared half: a batch of rows in, one embedded batch out, fresh rows cached."""

    encoder: Any
    cache: EmbeddingCache | None

    def embedded(self, batch: dict[str, Any], dim: int | None = None) -> EmbeddedBatch:
        """The batch's embeddings: from the decoding tasks' pixels and cache hits, or, where
        there was no decoding stage, decoded here exactly as the local engine does."""
        paths = tuple(str(p) for p in batch["path"])
        if "pixels" not in batch:
            loads = [text_to_path(str(p)) for p in batch["load"]]
            done = next(embed_paths(self.encoder, loads, max(1, len(loads)), self.cache, dim))
            return replace(done, paths=paths)
        errors: list[str | None] = [str(e) or None for e in batch["error"]]
        vectors: list[np.ndarray | None] = [None] * len(paths)
        fresh: dict[int, Any] = {}  # row -> its prepared image
        for i, error in enumerate(errors):
            if error is None:
                vectors[i], errors[i] = self._row(batch, i, dim, fresh)
        if fresh:
            computed = self.encoder.encode_prepared(list(fresh.values()))
            for i, vector in zip(fresh, computed, strict=True):
                vectors[i] = vector
            self._remember([str(batch["load"][i]) for i in fresh], computed)
        kept = [v for v in vectors if v is not None]
        stacked = np.stack(kept) if kept else np.zeros((0, 0), np.float32)
        return EmbeddedBatch(paths, tuple(errors), stacked)

    def _row(
        self, batch: dict[str, Any], i: int, dim: int | None, fresh: dict[int, Any]
    ) -> tuple[np.ndarray | None, str | None]:
        """Row i's cached embedding if it was looked up under this model's key; else its
        pixels (or, for an unusual transform the tasks could not run, its file) go to fresh."""
        cached = np.frombuffer(batch["cached"][i], np.float32)
        if len(cached) and batch["key"][i] == self.encoder.plan.image_cache_key:
            if dim in (None, len(cached)):
                return cached, None
        if len(batch["pixels"][i]):
            shape = tuple(int(v) for v in batch["shape"][i])
            fresh[i] = np.frombuffer(batch["pixels"][i], np.uint8).reshape(shape)
            return None, None
        prepared = prepare_path(self.encoder, text_to_path(str(batch["load"][i])))
        if prepared.error is None:
            fresh[i] = prepared.tensor
        return None, prepared.error

    def _remember(self, loads: list[str], computed: np.ndarray) -> None:
        model = self.encoder.plan.image_cache_key
        if self.cache is None or model is None:
            return
        keys = [FileKey.of(text_to_path(load)) for load in loads]
        pairs = zip(keys, computed, strict=True)
        self.cache.put_images(model, [(key, vector) for key, vector in pairs if key is not None])


class Scorer(_Embedding):
    """A Ray actor for label: the model loaded once, then decoded batches in, predictions out."""

    def __init__(
        self,
        settings: ModelSettings,
        labels: tuple[Label, ...],
        templates: TemplateSet,
        use_cache: bool,
        embeddings: bool,
    ) -> None:
        from clipcls.engine.model import ClipModel

        self.cache = EmbeddingCache(settings.resolved_cache_dir()) if use_cache else None
        self.encoder = ClipModel(settings)
        self.classifier = Classifier(self.encoder, labels, templates, None, self.cache)
        self.embeddings = embeddings

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {
            key: [] for key in ("path", "error", "labels", "probs", "sims", "embedding")
        }
        dim = self.classifier.label_weights.shape[1]
        for prediction in self.classifier.predict_embedded(self.embedded(batch, dim)):
            out["path"].append(prediction.path)
            out["error"].append(clean_text(prediction.error or ""))
            out["labels"].append([s.label for s in prediction.scores])
            out["probs"].append([s.probability for s in prediction.scores])
            out["sims"].append([s.similarity for s in prediction.scores])
            keep = self.embeddings and prediction.embedding is not None
            out["embedding"].append(prediction.embedding.tolist() if keep else [])  # type: ignore[union-attr]
        return out


class Embedder(_Embedding):
    """A Ray actor for evaluate: the model loaded once, then decoded batches in, image
    embeddings (or errors) out; scoring stays on the driver, once per template set."""

    def __init__(self, settings: ModelSettings, use_cache: bool) -> None:
        from clipcls.engine.model import ClipModel

        self.encoder = ClipModel(settings)
        self.cache = EmbeddingCache(settings.resolved_cache_dir()) if use_cache else None

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        done = self.embedded(batch)
        vectors = iter(done.embeddings)
        out: dict[str, list[Any]] = {"path": [], "error": [], "embedding": []}
        for path, error in zip(done.paths, done.errors, strict=True):
            out["path"].append(path)
            out["error"].append(clean_text(error or ""))
            out["embedding"].append([] if error else next(vectors).tolist())
        return out
