"""Approximate nearest neighbours for very large collections: a usearch (HNSW, cosine) index
over a Collection's matrix, stored beside the cache and reused while the collection holds the
same images and embeddings. Optional (`pip install 'clipcls[ann]'`); exact search otherwise."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import tempfile
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipcls.classify import ShowProgress, no_progress
from clipcls.errors import UsageError
from clipcls.search.collect import Collection
from clipcls.search.query import top_k
from clipcls.search.store import INDEX_SUFFIX, mark_used, prune_beside
from clipcls.settings import ModelSettings

if TYPE_CHECKING:
    from usearch.index import Index

# Exact search below this many rows: a float16 matmul over a memory-mapped matrix stays within
# seconds up to here, and an index costs about a millisecond a row to build on two cores.
ANN_ROWS = 1_000_000
INSTALL = "pip install 'clipcls[ann]'"
FOLDER = Path("search") / "ann"  # under the cache folder, beside the stored matrices
FORMAT = 1  # in both digests: an index of another layout is never reused
ADD_CHUNK = 16_384  # rows added per call: the progress moves, each call uses every core
EXPANSION = 64  # usearch's default breadth of a search; raised for large k
DTYPES = {np.dtype(np.float16): "f16", np.dtype(np.float32): "f32"}

# The index last opened in this process, for the Collection it was opened for: a server that
# keeps a collection answers its next queries without hashing the matrix again.
_opened: tuple[weakref.ref[Collection], Index] | None = None


def usearch_installed() -> bool:
    """Whether the optional usearch package can be imported."""
    return importlib.util.find_spec("usearch") is not None


def use_ann(n: int, notice: Callable[[str], None] | None = None) -> bool:
    """Whether a search over n rows goes through the index: n at or above ANN_ROWS and usearch
    installed. Above the size without usearch the search stays exact and notice hears one line
    saying how to get the index."""
    if n < ANN_ROWS:
        return False
    if usearch_installed():
        return True
    if notice is not None:
        notice(f"exact search over {n:,} images; an approximate index is faster: {INSTALL}")
    return False


def ann_search(
    collection: Collection,
    query: np.ndarray,
    k: int,
    skip: frozenset[int] = frozenset(),
    folder: Path | None = None,
    progress: ShowProgress = no_progress,
) -> list[tuple[int, float]]:
    """Nearly always the k rows most similar to query (dim,), best first, leaving out the rows
    in skip: (row, score) as search.query.top_k answers, each score the row's exact cosine.
    The index is opened from folder (default: the cache's search/ann) or built there first
    (progress counts the rows). UsageError if usearch is not installed."""
    want = min(k + len(skip), len(collection.paths))
    if want <= 0:
        return []
    if want >= len(collection.paths):  # every row asked for: nothing to approximate, and a
        return top_k(collection.matrix, query, k, skip)  # graph walk may miss a few of them
    index = open_index(collection, folder, progress)
    # usearch has a setter for it, declared where mypy does not see it
    index.expansion_search = max(EXPANSION, 2 * want)  # type: ignore[misc]
    q = np.asarray(query, dtype=np.float32)
    rows = np.sort(np.asarray(index.search(q, want).keys, dtype=np.int64))  # in file order
    # The candidates' exact scores, as top_k computes them: (m, dim) @ (dim,) -> (m,)
    scores = np.asarray(collection.matrix[rows], dtype=np.float32) @ q
    pairs = zip(rows.tolist(), scores.tolist(), strict=True)
    ranked = sorted(pairs, key=lambda pair: (-pair[1], pair[0]))  # ties by row, as top_k
    return [(row, min(score, 1.0)) for row, score in ranked if row not in skip][:k]


def open_index(
    collection: Collection, folder: Path | None = None, progress: ShowProgress = no_progress
) -> Index:
    """The collection's index: the one opened last in this process if it is of this very
    object, else the stored one if it is of the same listing and embeddings, else built and
    stored (an older index of the same listing is removed)."""
    global _opened
    if _opened is not None and _opened[0]() is collection:
        return _opened[1]
    if not usearch_installed():
        raise UsageError(f"an approximate index needs usearch: {INSTALL}")
    path = index_path(collection, folder or default_folder())
    index = _stored(path, collection)
    if index is None:  # not `or`: an Index has a length, and an empty one is falsy
        index = _built(path, collection, progress)
    _opened = (weakref.ref(collection), index)
    return index


def default_folder() -> Path:
    """Where indexes are kept: search/ann in the cache folder ($CLIPCLS_CACHE_DIR, else the
    user's cache)."""
    return ModelSettings().resolved_cache_dir() / FOLDER


def index_path(collection: Collection, folder: Path) -> Path:
    """The index file for the collection: named by its listing (model and paths, so that a
    new version replaces the last) and by its contents (so that a changed image is noticed)."""
    return folder / f"{listing_digest(collection)}.{content_digest(collection)}{INDEX_SUFFIX}"


def listing_digest(collection: Collection) -> str:
    """A digest of the model and the paths, in order."""
    digest = hashlib.blake2b(f"{FORMAT}\n{collection.model}".encode(), digest_size=16)
    for path in collection.paths:  # a path never holds NUL: the listing reads back one way
        digest.update(b"\0" + os.fsencode(path))
    return digest.hexdigest()


def content_digest(collection: Collection) -> str:
    """A digest of the matrix's shape, type and every byte (about 1 GB/s: a second at
    a million 512-dim rows, against minutes to build the index again)."""
    matrix = collection.matrix
    digest = hashlib.blake2b(f"{FORMAT}\n{matrix.shape}\n{matrix.dtype}".encode(), digest_size=16)
    for start in range(0, len(matrix), ADD_CHUNK):
        digest.update(np.ascontiguousarray(matrix[start : start + ADD_CHUNK]).data)
    return digest.hexdigest()


def _stored(path: Path, collection: Collection) -> Index | None:
    """The index stored at path, memory-mapped, if it has the collection's rows and width."""
    from usearch.index import Index

    if not path.exists():
        return None
    try:
        index = Index.restore(str(path), view=True)
    except (RuntimeError, ValueError, OSError):
        return None  # damaged or of another usearch: built again
    if index is None or len(index) != len(collection.paths):
        return None
    if index.ndim != collection.matrix.shape[1]:
        return None
    mark_used(path)
    return index


def _built(path: Path, collection: Collection, progress: ShowProgress) -> Index:
    """An index of the collection's rows (key i for row i), saved at path if it can be."""
    from usearch.index import Index

    matrix = collection.matrix
    dtype = DTYPES.get(matrix.dtype, "f32")
    index = Index(ndim=matrix.shape[1], metric="cos", dtype=dtype)
    with progress(len(matrix)) as advance:
        for start in range(0, len(matrix), ADD_CHUNK):
            block = np.ascontiguousarray(matrix[start : start + ADD_CHUNK])
            index.add(np.arange(start, start + len(block), dtype=np.uint64), block)
            advance(len(block))
    _save(index, path)
    return index


def _save(index: Any, path: Path) -> None:
    """Write the index aside and rename it into place, then remove the listing's older ones.
    An index that cannot be written is only built again next time."""
    with contextlib.suppress(OSError, RuntimeError):  # RuntimeError: usearch's write failed
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, aside = tempfile.mkstemp(prefix=".new-", suffix=".usearch", dir=path.parent)
        os.close(handle)
        try:
            index.save(aside)
            os.replace(aside, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(aside)
        for older in _same_listing(path):
            with contextlib.suppress(OSError):
                older.unlink()
    prune_beside(path.parent)  # other listings' indexes, as their matrices are pruned


def _same_listing(path: Path) -> Iterator[Path]:
    """The other index files of path's listing."""
    listing = path.name.split(".")[0]
    for other in path.parent.glob(f"{listing}.*.usearch"):
        if other != path:
            yield other
