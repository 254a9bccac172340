"""Search and similar as Python calls: the images of some inputs ranked by cosine to a query
(text, images, or both) or to one image, best first, as small frozen dataclasses."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
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
from clipcls.search.served import DEFAULT_K as DEFAULT_K  # re-exported: the commands' default
from clipcls.search.served import Hit, Ranking, served_ranking
from clipcls.terms import Query


def search(
    backend: Backend,
    inputs: Sequence[str],
    query: Query | None = None,
    images: Sequence[Path] = (),
    k: int = DEFAULT_K,
    templates: TemplateSet | None = None,
    include_hidden: bool = False,
    progress: ShowProgress = no_progress,
    notice: Callable[[str], None] | None = None,
) -> Ranking:
    """The k images of inputs (walked as `label` walks them) nearest the query, best first.

    Args:
        query: rclip-style terms (`Query.parse("a red car + sunset - blurry")`: + terms
            pull, - terms push), each through templates (None: the text alone).
        images: query images; with text, all queries are averaged.
        progress: shown while files are embedded (a fully cached run embeds none), and
            while an approximate index is built (from ann.ANN_ROWS images).
        notice: hears one line where an index would help but usearch is not installed.

    Images not yet embedded are embedded (then cached); UsageError for no query, an
    unreadable query image, no image found, or k < 1.
    """
    _check_k(k)
    expected = query_expected(query, images, templates)
    if not expected.labels and not images:
        raise UsageError(NO_QUERY)  # before any file is embedded
    plain = query is not None and not images and templates is None and not include_hidden
    served = None
    if plain and query is not None and isinstance(backend, ServerBackend):
        ask, model = backend.search_folders, backend.model_id
        served = served_ranking(ask, inputs, query.text, k, model)  # its text: the HTTP form
    if served is not None:
        return served
    collection = collect(backend, inputs, include_hidden, progress, expected=expected)
    vector = query_vector(backend, query, images, templates)
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
