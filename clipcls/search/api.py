"""Search and similar as Python calls: the images of some inputs ranked by cosine to a query
(text, images, or both) or to one image, best first, as small frozen dataclasses."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipcls.backends.base import Backend
from clipcls.backends.server import ServerBackend
from clipcls.classify import ShowProgress, no_progress
from clipcls.errors import UsageError
from clipcls.pathtext import path_key
from clipcls.prompts import TemplateSet
from clipcls.search.ann import FOLDER, ann_search, use_ann
from clipcls.search.collect import NO_QUERY, Collection, collect, query_expected, query_vector
from clipcls.search.query import top_k, unit

DEFAULT_K = 20


@dataclass(frozen=True)
class Hit:
    """One image found: its place (1 is best), path, and cosine to the query."""

    rank: int
    path: str
    score: float


@dataclass(frozen=True)
class Ranking:
    """A search's answer: the hits, best first, and the files that could not be read."""

    hits: tuple[Hit, ...]
    failures: tuple[tuple[str, str], ...]  # path, error
    model: str  # the model id the embeddings are of


def search(
    backend: Backend,
    inputs: Sequence[str],
    text: str | None = None,
    images: Sequence[Path] = (),
    k: int = DEFAULT_K,
    templates: TemplateSet | None = None,
    include_hidden: bool = False,
    progress: ShowProgress = no_progress,
    notice: Callable[[str], None] | None = None,
) -> Ranking:
    """The k images of inputs (walked as `label` walks them) nearest the query, best first.

    Args:
        text: rclip-style: `a red car + sunset - blurry` (+ terms pull, - terms push), each
            term through templates (None: the text alone).
        images: query images; with text, all queries are averaged.
        progress: shown while files are embedded (a fully cached run embeds none), and
            while an approximate index is built (from ann.ANN_ROWS images).
        notice: hears one line where an index would help but usearch is not installed.

    Images not yet embedded are embedded (then cached); UsageError for no query, an
    unreadable query image, no image found, or k < 1.
    """
    _check_k(k)
    expected = query_expected(text, images, templates)
    if not expected.labels and not images:
        raise UsageError(NO_QUERY)  # before any file is embedded
    plain = text is not None and not images and templates is None and not include_hidden
    served = _served(backend, inputs, text, k) if plain and text is not None else None
    if served is not None:
        return served
    collection = collect(backend, inputs, include_hidden, progress, expected=expected)
    vector = query_vector(backend, text, images, templates)
    return _ranked(backend, collection, vector, k, frozenset(), progress, notice)


def similar(
    backend: Backend,
    image: Path,
    inputs: Sequence[str],
    k: int = DEFAULT_K,
    include_hidden: bool = False,
    progress: ShowProgress = no_progress,
    notice: Callable[[str], None] | None = None,
) -> Ranking:
    """The k images of inputs nearest image, best first, image itself left out (its path
    however spelled, a link to it, a hard link: the same file; a copy of it is another file,
    and is found first)."""
    _check_k(k)
    expected = query_expected(None, [image], None)
    collection = collect(backend, inputs, include_hidden, progress, expected=expected)
    itself = path_key(os.fspath(image))
    rows = frozenset(i for i, p in enumerate(collection.paths) if path_key(p) == itself)
    if rows:  # its row is its embedding: nothing to ask the backend
        vector = unit(collection.matrix[min(rows)].astype(np.float32), "the image")
    else:
        vector = query_vector(backend, None, [image], None)
    wanted = k
    while True:  # image's other names rank first: ask past them (a stat for each hit only)
        ranking = _ranked(backend, collection, vector, wanted, rows, progress, notice)
        hits = [hit for hit in ranking.hits if not _same_file(hit.path, image)]
        if len(hits) >= k or len(ranking.hits) < wanted:
            break
        wanted += len(ranking.hits) - len(hits)
    ranked = tuple(Hit(rank, hit.path, hit.score) for rank, hit in enumerate(hits[:k], 1))
    return Ranking(ranked, ranking.failures, ranking.model)


def _same_file(path: str, image: Path) -> bool:
    try:
        return os.path.samefile(path, image)
    except (OSError, ValueError):  # gone meanwhile, or a URL
        return False


def _served(backend: Backend, inputs: Sequence[str], text: str, k: int) -> Ranking | None:
    """The server's own search (from its cache and a matrix it keeps warm) where every input
    is a folder it may read; None where it refuses, and this side searches instead."""
    if not isinstance(backend, ServerBackend) or not inputs:
        return None
    if not all(os.path.isdir(path) for path in inputs):
        return None
    given = {os.path.abspath(path): path for path in inputs}
    answer = backend.search_folders(list(given), text, k)
    if answer is None:
        return None
    hits = tuple(
        Hit(int(hit["rank"]), _as_given(str(hit["path"]), given), float(hit["score"]))
        for hit in answer["search"]
    )
    failed = tuple((_as_given(str(p), given), str(e)) for p, e in answer.get("failures", []))
    return Ranking(hits, failed, backend.model_id)


def _as_given(path: str, given: dict[str, str]) -> str:
    """path as the local walk would spell it: under the input as the user wrote it, through
    Path as the walk does (`./photos` and `photos//` give `photos/x.jpg`, `.` gives `x.jpg`)."""
    for absolute, written in given.items():
        inside = os.path.relpath(path, absolute)
        if inside != os.pardir and not inside.startswith(os.pardir + os.sep):
            return str(Path(written) / inside)
    return path


def _check_k(k: int) -> None:
    if k < 1:
        raise UsageError(f"k must be 1 or more, not {k}")


def _ranked(
    backend: Backend,
    collection: Collection,
    vector: np.ndarray,
    k: int,
    skip: frozenset[int],
    progress: ShowProgress,
    notice: Callable[[str], None] | None,
) -> Ranking:
    """The hits: exact top-k, or through the approximate index from ann.ANN_ROWS images
    where usearch is installed (kept beside the backend's cache, else the default one)."""
    if use_ann(len(collection.paths), notice):
        store = backend.image_store
        folder = None if store is None else store.folder / FOLDER
        found = ann_search(collection, vector, k, skip, folder, progress)
    else:
        found = top_k(collection.matrix, vector, k, skip)
    hits = tuple(
        Hit(rank, collection.paths[row], score) for rank, (row, score) in enumerate(found, 1)
    )
    return Ranking(hits, collection.failures, collection.model)
