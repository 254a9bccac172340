"""The image stream: paths -> decoded batches (in threads) -> embeddings, through the cache."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from clipcls.cache import EmbeddingCache
from clipcls.errors import ImageError
from clipcls.filekey import FileKey
from clipcls.images import DEFAULT_MAX_MEGAPIXELS, check_image, load_image

PREFETCH_BATCHES = 2  # decoded batches waiting for the device: bounds memory


@dataclass(frozen=True)
class EmbedPlan:
    """The seam between the pipeline and an encoder: how its images are decoded and threaded,
    and the keys its embeddings are cached under (None: not cached). The engine fills it in
    from the model it loaded; a fake encoder keeps the defaults."""

    draft_size: int | None = None  # libjpeg may decode large JPEGs down to this size
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    decode_workers: int = 0  # decode threads; 0 decodes in the calling thread
    overlap_decode: bool = False  # decode ahead of the device (GPU) or take turns (CPU)
    image_cache_key: str | None = None
    text_cache_key: str | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, for notices and for results that must be reproducible."""

    model: str
    pretrained: str | None
    device: str
    precision: str
    notices: tuple[str, ...] = field(default=())
    runtime: str = "torch"  # what ran the towers: torch, or onnx (an export's own weights)


class Preparing(Protocol):
    """What decoding needs: the plan and the model's preprocessing."""

    plan: EmbedPlan

    def prepare(self, image: Image.Image) -> Any: ...


class Encoder(Preparing, Protocol):
    """What the classifier needs from a model; ClipModel is the real one, tests use fakes."""

    info: ModelInfo
    logit_scale: float
    logit_bias: float | None

    def encode_prepared(self, prepared: Sequence[Any]) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class PreparedImage:
    """One input after decoding and preprocessing: the model input, or why there is none, or
    the embedding the cache already had for it (then there is nothing to compute)."""

    path: str
    tensor: Any = None
    error: str | None = None
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)  # (dim,)
    key: FileKey | None = None  # the cache remembers a fresh embedding under it


@dataclass(frozen=True)
class EmbeddedBatch:
    """A batch of inputs in order, with the embeddings of the readable ones."""

    paths: tuple[str, ...]
    errors: tuple[str | None, ...]  # one per path; None where the image was embedded
    embeddings: np.ndarray  # (n_readable, dim), in the order of the readable paths

    def part(self, start: int, stop: int) -> EmbeddedBatch:
        """The inputs start:stop, with their embeddings."""
        before = sum(error is None for error in self.errors[:start])
        count = sum(error is None for error in self.errors[start:stop])
        rows = self.embeddings[before : before + count]
        return EmbeddedBatch(self.paths[start:stop], self.errors[start:stop], rows)


def prepare_path(encoder: Preparing, path: Path | str) -> PreparedImage:
    """Decode and preprocess one file; a failure is recorded, never raised."""
    try:
        image = load_image(path, encoder.plan.draft_size, encoder.plan.max_megapixels)
        return PreparedImage(str(path), encoder.prepare(image))
    except ImageError as error:
        return PreparedImage(str(path), error=str(error))
    except (OSError, ValueError, RuntimeError) as error:
        # Decoded, but the resize/normalize step refused it: still one file's problem.
        return PreparedImage(str(path), error=f"cannot preprocess {path}: {error}")


def embed_batch(
    encoder: Encoder,
    batch: Sequence[PreparedImage],
    cache: EmbeddingCache | None = None,
    pass_size: int | None = None,
) -> EmbeddedBatch:
    """Embed the images of a batch that need it, in forward passes of pass_size (one pass if
    None); take cached embeddings as they are; keep errors in place. With a cache, fresh
    embeddings are remembered under their images' keys (the encoder's image cache key)."""
    fresh = [i for i, item in enumerate(batch) if item.error is None and item.embedding is None]
    step = pass_size or max(1, len(fresh))
    computed: dict[int, np.ndarray] = {}
    for start in range(0, len(fresh), step):
        rows = fresh[start : start + step]
        vectors = encoder.encode_prepared([batch[i].tensor for i in rows])
        computed.update(zip(rows, vectors, strict=True))
    model = encoder.plan.image_cache_key
    if cache is not None and model is not None:
        keyed = [(key, computed[i]) for i in fresh if (key := batch[i].key) is not None]
        if keyed:
            cache.put_images(model, keyed)
    readable = [
        computed[i] if item.embedding is None else item.embedding
        for i, item in enumerate(batch)
        if item.error is None
    ]
    embeddings = np.stack(readable) if readable else np.zeros((0, 0), np.float32)
    return EmbeddedBatch(
        tuple(item.path for item in batch), tuple(item.error for item in batch), embeddings
    )


@dataclass
class Chunk:
    """One batch of paths, with what the cache already had for them."""

    paths: list[str]
    keys: list[FileKey | None]
    hits: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def misses(self) -> list[str]:
        pairs = zip(self.paths, self.keys, strict=True)
        return [path for path, key in pairs if key is None or key.path not in self.hits]


def _chunks(
    paths: Iterable[Path | str],
    size: int,
    cache: EmbeddingCache | None,
    model: str | None,
    max_megapixels: float,
    dim: int | None,
) -> Iterator[Chunk]:
    iterator = iter(paths)
    while batch := [str(p) for p in itertools.islice(iterator, size)]:
        yield look_up(batch, cache, model, max_megapixels, dim)


def look_up(
    batch: list[str],
    cache: EmbeddingCache | None,
    model: str | None,
    max_megapixels: float,
    dim: int | None = None,
) -> Chunk:
    """A batch of paths with what the cache holds for them under model (its image key)."""
    keys: list[FileKey | None] = [None] * len(batch)
    if cache is not None:
        keys = [FileKey.of(p) for p in batch]
    chunk = Chunk(batch, keys)
    if cache is not None and model is not None:
        hits = cache.get_images(model, [k for k in keys if k is not None])
        if dim is not None and any(len(vector) != dim for vector in hits.values()):
            cache.fail(ValueError(f"embeddings that are not {dim}-dimensional"))
            hits = {}
        chunk.hits = {path: v for path, v in hits.items() if _passes(path, max_megapixels)}
    return chunk


def _passes(path: str, max_megapixels: float) -> bool:
    """A cached image still meets the input checks (else it is decoded, and fails there)."""
    try:
        check_image(path, max_megapixels)
    except ImageError:
        return False
    return True


def _decoded(
    encoder: Encoder, chunks: Iterator[Chunk], workers: int, overlap: bool
) -> Iterator[tuple[Chunk, list[PreparedImage]]]:
    """Decode each chunk's cache misses: inline, in turns with compute, or ahead of it."""
    if workers <= 1 and not overlap:
        for chunk in chunks:
            yield chunk, [prepare_path(encoder, p) for p in chunk.misses]
        return
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="clipcls-decode")
    try:
        if not overlap:  # all cores decode, then all cores compute: never oversubscribed
            for chunk in chunks:
                yield chunk, list(pool.map(lambda p: prepare_path(encoder, p), chunk.misses))
            return
        pending: deque[tuple[Chunk, list[Future[PreparedImage]]]] = deque()
        for chunk in chunks:
            pending.append((chunk, [pool.submit(prepare_path, encoder, p) for p in chunk.misses]))
            if len(pending) > PREFETCH_BATCHES:
                done, futures = pending.popleft()
                yield done, [f.result() for f in futures]
        while pending:
            done, futures = pending.popleft()
            yield done, [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _with_hits(chunk: Chunk, decoded: list[PreparedImage]) -> list[PreparedImage]:
    """The chunk in input order: cache hits as their embeddings, the misses as decoded, each
    keyed for the cache by the key it was looked up under."""
    misses = iter(decoded)
    items: list[PreparedImage] = []
    for path, key in zip(chunk.paths, chunk.keys, strict=True):
        if key is not None and key.path in chunk.hits:
            items.append(PreparedImage(path, embedding=chunk.hits[key.path]))
        else:
            items.append(replace(next(misses), key=key))
    return items


def embed_paths(
    encoder: Encoder,
    paths: Iterable[Path | str],
    batch_size: int,
    cache: EmbeddingCache | None = None,
    dim: int | None = None,
) -> Iterator[EmbeddedBatch]:
    """Stream image embeddings batch by batch, in input order, computing only cache misses.

    With dim, cached embeddings of another length are taken as a damaged cache.
    """
    plan = encoder.plan
    model = plan.image_cache_key
    cache = cache if model is not None else None
    chunks = _chunks(paths, batch_size, cache, model, plan.max_megapixels, dim)
    for chunk, prepared in _decoded(encoder, chunks, plan.decode_workers, plan.overlap_decode):
        yield embed_batch(encoder, _with_hits(chunk, prepared), cache)
