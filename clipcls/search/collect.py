"""The images a search runs over: the inputs walked as `label` walks them, each embedded once
(cache first: a fully cached run loads no model), gathered into one float16 matrix, stored
beside the cache (or held in memory) for the next search over the same files; and a query's
one unit vector. The command line's backends and the server's worker both collect here."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from clipcls.backends.base import Expected, ImageStore
from clipcls.classify import ShowProgress, no_progress
from clipcls.errors import UsageError
from clipcls.gathered import gather
from clipcls.images import Scan, iter_image_paths, scan_folder
from clipcls.labels import Label
from clipcls.pathtext import clean_text
from clipcls.prediction import Prediction
from clipcls.prompts import TemplateSet
from clipcls.scoring.spec import label_weights
from clipcls.search.query import average, combine, unit
from clipcls.search.store import (
    HeldListings,
    Stored,
    load_stored,
    save_stored,
    stored_folder,
    versions,
)
from clipcls.terms import Query, Term

PLAIN = TemplateSet("plain", ("{}",), "the text alone")
NO_QUERY = "no query: give a text, an --image, or both"
QUERY = "query"  # the label name a query's terms travel under in an Expected


class EmbeddingSource(Protocol):
    """What a search asks of where embeddings come from: any Backend, or a server's worker."""

    @property
    def model_id(self) -> str:
        """The model the embeddings are of, as rows record it."""

    @property
    def image_store(self) -> ImageStore | None:
        """Where a listing's matrix may be stored (None: not stored)."""

    def start(self, expected: Expected | None = None) -> None:
        """Get ready to embed (load the model unless expected is all cached)."""

    def embed_images(self, paths: Iterable[Path | str]) -> Iterator[Prediction]:
        """One Prediction per path with its image embedding, or its error."""

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length text embeddings, (n_texts, dim)."""


@dataclass(frozen=True)
class Collection:
    """The readable images of some inputs and their embeddings, row i of matrix for paths[i]."""

    paths: tuple[str, ...]  # the readable images, in walk order (label's input rules)
    matrix: np.ndarray  # (n, dim) float16 unit rows (memory-mapped where stored)
    failures: tuple[tuple[str, str], ...]  # unreadable: path, error
    model: str  # the model id the embeddings are of


def query_expected(
    query: Query | None, images: Sequence[Path | str], templates: TemplateSet | None
) -> Expected:
    """What a query asks of a backend (its terms' prompts, its images), said before it starts
    so that a cached query loads no model."""
    terms = query.terms if query is not None else ()
    labels = (Label(QUERY, tuple(term.text for term in terms)),) if terms else ()
    given = tuple(images)
    return Expected(labels, (templates or PLAIN,), paths=lambda: given)


def collect(
    backend: EmbeddingSource,
    inputs: Sequence[str],
    include_hidden: bool = False,
    progress: ShowProgress = no_progress,
    exclude: Path | None = None,
    expected: Expected | None = None,
    held: HeldListings | None = None,
    scan: Scan = scan_folder,
) -> Collection:
    """The inputs' images and embeddings: from the stored matrix where every file is as it
    was, else through backend.embed_images (cache first; progress counts the files), then
    stored. expected: what else the run will ask (a query_expected), so that a start from
    the cache alone covers it; held: matrices a long-lived process keeps in memory, used
    before the stored ones; scan: how a folder is listed (a server: beneath its roots).
    UsageError if there is no image or none is readable."""
    paths = [str(path) for path in iter_image_paths(inputs, include_hidden, exclude, scan=scan)]
    if not paths:
        raise UsageError(f"no images found in {', '.join(clean_text(i) for i in inputs)}")
    found = versions(paths)  # before embedding: a file changed meanwhile is not trusted later
    stored = _load(backend, inputs, paths, found, held)
    if stored is not None:
        return _readable(_from_stored(paths, stored))
    backend.start(_with_paths(expected, paths))
    collection = _readable(_embedded(backend, paths, progress))
    store = backend.image_store  # known now if starting loaded the model
    if found is not None and (store is not None or held is not None):
        position = {path: index for index, path in enumerate(paths)}
        failures = tuple((position[path], error) for path, error in collection.failures)
        stored = Stored(collection.matrix, failures, collection.model)
        if store is not None:
            save_stored(stored_folder(store, paths), found, stored)
        if held is not None:
            held.save(inputs, paths, found, stored)
    return collection


def _load(
    backend: EmbeddingSource,
    inputs: Sequence[str],
    paths: list[str],
    found: np.ndarray | None,
    held: HeldListings | None,
) -> Stored | None:
    """The listing's matrix as held in memory, else as stored, if every file is as it was."""
    if found is None:  # URLs among the inputs: their versions are not known
        return None
    stored = held.load(inputs, paths, found) if held is not None else None
    store = backend.image_store
    if stored is None and store is not None:
        stored = load_stored(stored_folder(store, paths), found)
    return stored


def _with_paths(expected: Expected | None, paths: list[str]) -> Expected:
    """expected, with the collection's files before its own."""
    if expected is None:
        return Expected((), (), paths=lambda: paths)
    more = expected.paths or (lambda: ())
    return Expected(expected.labels, expected.template_sets, lambda: itertools.chain(paths, more()))


def _from_stored(paths: list[str], stored: Stored) -> Collection:
    failed = dict(stored.failures)
    readable = tuple(path for index, path in enumerate(paths) if index not in failed)
    failures = tuple((paths[index], error) for index, error in stored.failures)
    return Collection(readable, stored.matrix, failures, stored.model)


def _embedded(backend: EmbeddingSource, paths: list[str], progress: ShowProgress) -> Collection:
    """Every path through backend.embed_images, gathered in walk order (Ray answers in the
    order it finishes) into one float16 matrix."""
    with progress(len(paths)) as advance:
        found = gather(backend.embed_images(paths), paths, advance, np.float16)
    return Collection(found.readable, found.matrix, found.failures, backend.model_id)


def _readable(collection: Collection) -> Collection:
    """collection, if it holds any image; else UsageError with the first file's error."""
    if not collection.paths:
        error = collection.failures[0][1]
        count = len(collection.failures)
        raise UsageError(f"none of the {count} files could be read ({clean_text(error)})")
    return collection


def query_vector(
    backend: EmbeddingSource,
    query: Query | None,
    images: Sequence[Path],
    templates: TemplateSet | None,
) -> np.ndarray:
    """The query as one unit vector, (dim,): its terms (rclip-style `a + b - c`, each through
    the templates, None: the text alone) summed with their signs and normalized, and each
    query image's embedding; all of them averaged, normalized. UsageError for no query or an
    unreadable query image."""
    terms = query.terms if query is not None else ()
    if not terms and not images:
        raise UsageError(NO_QUERY)
    backend.start(query_expected(query, images, templates))
    vectors = [_text_vector(backend, terms, templates or PLAIN)] if terms else []
    vectors.extend(_image_vectors(backend, images))
    return average(vectors)


def _text_vector(
    backend: EmbeddingSource, terms: Sequence[Term], templates: TemplateSet
) -> np.ndarray:
    """The terms' unit embeddings (each averaged over the templates) combined by sign."""
    labels = [Label(term.text, (term.text,)) for term in terms]
    rows = label_weights(backend.embed_texts, labels, templates)  # (n_terms, dim) unit rows
    return combine(rows, [term.sign for term in terms])


def _image_vectors(backend: EmbeddingSource, images: Sequence[Path]) -> Iterator[np.ndarray]:
    """Each query image's unit embedding; UsageError naming the first that cannot be read."""
    for prediction in list(backend.embed_images(images)):
        if prediction.embedding is None:
            where = clean_text(prediction.path)
            raise UsageError(f"cannot read query image {where}: {prediction.error}")
        yield unit(prediction.embedding, f"query image {clean_text(prediction.path)}")
