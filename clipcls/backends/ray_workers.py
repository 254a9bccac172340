"""What runs on Ray's workers: decoding in CPU tasks (no weights held), and actors that load the
model once and embed batches with the local engine's own code, decoding themselves where there
is no decoding stage; the driver scores."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image

from clipcls.cache import EmbeddingCache
from clipcls.filekey import FileKey
from clipcls.pathtext import clean_text, text_to_path
from clipcls.pipeline import (
    EmbeddedBatch,
    EmbedPlan,
    PreparedImage,
    embed_batch,
    embed_paths,
    look_up,
    prepare_path,
)
from clipcls.prediction import Prediction
from clipcls.settings import ModelSettings

COLUMNS = ("path", "load", "error", "key", "pixels", "shape", "cached")


class Preparer:
    """A model's decoding and preprocessing, built on the meta device: no weights in memory."""

    def __init__(self, settings: ModelSettings, device: str) -> None:
        from clipcls.engine.runtimes import choose_runtime

        self._onnx: Any = None
        self.plan: EmbedPlan
        if choose_runtime(settings) == "onnx":  # an export: its own preprocessing, no torch
            from clipcls.engine.factory import open_model

            self._onnx = open_model(settings)  # the manifest and the image tower's session
            self.plan = self._onnx.plan
            return
        from clipcls.engine.fastpaths import split_preprocess
        from clipcls.engine.hardware import pick_precision
        from clipcls.engine.model import image_plan, load_preprocess, source_weights
        from clipcls.engine.sources import resolve_source

        source = resolve_source(settings)
        model, self._preprocess = load_preprocess(source, settings)
        self._fast = split_preprocess(self._preprocess)
        precision = pick_precision(settings.precision, device)
        weights = source_weights(source, settings)
        self.plan = image_plan(weights, settings, model, self._preprocess, precision, device)

    @property
    def sends_pixels(self) -> bool:
        """True where the preprocessing ends in uint8 pixels the actors can take as they are."""
        return self._onnx is not None or self._fast is not None

    def prepare(self, image: Image.Image) -> Any:
        from clipcls.engine.fastpaths import prepare_image

        if self._onnx is not None:
            return self._onnx.prepare(image)
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
        """The batch's embeddings (its paths as the files are named, not as text): from the
        decoding tasks' pixels and cache hits, or, where there was no decoding stage, decoded
        here exactly as the local engine does."""
        paths = tuple(text_to_path(str(p)) for p in batch["path"])
        if "pixels" not in batch:
            loads = [text_to_path(str(p)) for p in batch["load"]]
            done = next(embed_paths(self.encoder, loads, max(1, len(loads)), self.cache, dim))
        else:
            items = [self._item(batch, i, dim) for i in range(len(paths))]
            done = embed_batch(self.encoder, items, self.cache)
        return replace(done, paths=paths)

    def _item(self, batch: dict[str, Any], i: int, dim: int | None) -> PreparedImage:
        """Row i: its decoding error; its cached embedding if it was looked up under this
        model's key; else its pixels (or, for an unusual transform the tasks could not run,
        its file decoded here), keyed for the cache."""
        load = text_to_path(str(batch["load"][i]))
        if error := str(batch["error"][i]):
            return PreparedImage(load, error=error)
        cached = np.frombuffer(batch["cached"][i], np.float32)
        if len(cached) and batch["key"][i] == self.encoder.plan.image_cache_key:
            if dim in (None, len(cached)):
                return PreparedImage(load, embedding=cached)
        key = FileKey.of(load) if self.cache is not None else None
        if len(batch["pixels"][i]):
            shape = tuple(int(v) for v in batch["shape"][i])
            pixels = np.frombuffer(batch["pixels"][i], np.uint8).reshape(shape)
            return PreparedImage(load, pixels, key=key)
        return replace(prepare_path(self.encoder, load), key=key)


class Embedder(_Embedding):
    """A Ray actor: the model loaded once, then decoded batches in, image embeddings (or
    errors) out; scoring stays on the driver."""

    def __init__(self, settings: ModelSettings, use_cache: bool) -> None:
        from clipcls.engine.factory import open_model

        self.encoder = open_model(settings)
        self.cache = EmbeddingCache(settings.resolved_cache_dir()) if use_cache else None

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """Each image's embedding (or error) as its prediction record, in JSON text (always
        valid UTF-8, as Arrow needs)."""
        done = self.embedded(batch)
        vectors = iter(done.embeddings)
        records = []
        for path, error in zip(done.paths, done.errors, strict=True):
            found = Prediction(path, error=error, embedding=None if error else next(vectors))
            records.append(json.dumps(found.to_record(embedding=True)))
        return {"record": records}
