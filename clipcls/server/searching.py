"""The worker's answer to a search request: the folders walked as `label` walks them, their
images' embeddings gathered from the worker's cache (misses embedded, then cached) into one
float16 matrix kept in memory while every file's version holds, so that a repeat query costs
the walk, a stat per file, the query's text embedding (cached) and an exact top-k."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipcls.cache import EmbeddingCache
from clipcls.classify import encode_prompts
from clipcls.errors import UsageError
from clipcls.images import iter_image_paths
from clipcls.labels import Label
from clipcls.pipeline import Encoder, PreparedImage, embed_batch
from clipcls.prompts import TemplateSet
from clipcls.scoring.spec import label_weights
from clipcls.search.query import combine, top_k
from clipcls.search.store import versions
from clipcls.search.terms import parse_query
from clipcls.server.checks import RequestError
from clipcls.server.protocol import ImageRef
from clipcls.server.roots import OUTSIDE
from clipcls.server.search_request import SearchRequest

PLAIN = TemplateSet("plain", ("{}",), "the text alone")  # `clipcls search`'s default
LISTINGS_KEPT = 8  # folder sets whose matrices stay in memory
CHUNK = 256  # images decoded at once: bounds the preprocessed tensors held


@dataclass(frozen=True)
class Budget:
    """What one search may cost the worker, which answers nobody else meanwhile: images put
    through the image tower (a predict request's limit), and seconds gathering the matrix.
    Past either, 409: the client searches on its side, embedding what is missing through
    predict requests that share the worker fairly (and fill this side's cache for next time)."""

    images: int = 256
    seconds: float = 60.0


@dataclass(frozen=True)
class Listing:
    """The matrix of one walk: readable paths (walk order), their rows, and the failures."""

    paths: tuple[str, ...]
    found: np.ndarray  # every walked file's version, (n, 4): the key the matrix holds for
    matrix: np.ndarray  # (n_readable, dim) float16
    failures: tuple[tuple[str, str], ...]


class ServedSearch:
    """Searches over folders, with the matrices of the last LISTINGS_KEPT folder sets."""

    def __init__(
        self,
        encoder: Encoder,
        texts: Encoder,
        cache: EmbeddingCache | None,
        prepare: Callable[[ImageRef], PreparedImage],
        pool: ThreadPoolExecutor,
        pass_size: int,
        budget: Budget = Budget(),
    ) -> None:
        self.encoder, self.texts, self.cache = encoder, texts, cache
        self.prepare, self.pool, self.pass_size = prepare, pool, pass_size
        self.budget = budget
        self.kept: OrderedDict[tuple[str, ...], Listing] = OrderedDict()
        self.embedded = 0  # images put through the image tower here (a warm query adds none)
        self.lock = threading.Lock()

    def answer(self, request: SearchRequest) -> dict[str, Any]:
        """{"search": [{"rank", "path", "score"}...], "failures": [[path, error]...],
        "embedded": images this query put through the image tower (0 once warm)}."""
        before = self.embedded
        with self.lock:  # LitServe runs one batch at a time; the lock keeps that true here
            listing = self._listing(request.folders)
            vector = self._query(request.text)
        found = top_k(listing.matrix, vector, request.k)
        hits = [
            {"rank": rank, "path": listing.paths[row], "score": score}
            for rank, (row, score) in enumerate(found, 1)
        ]
        failures = [list(item) for item in listing.failures]
        return {"search": hits, "failures": failures, "embedded": self.embedded - before}

    def _listing(self, folders: tuple[str, ...]) -> Listing:
        """The folders' matrix: kept, if every file walked is the version it was; else built."""
        paths = [str(path) for path in iter_image_paths(folders)]
        if not paths:
            raise RequestError(400, "no images found in the search folders")
        found = versions(paths)
        assert found is not None  # local folders, never URLs
        kept = self.kept.get(folders)
        walked = kept is not None and len(kept.paths) + len(kept.failures) == len(paths)
        if kept is not None and walked and np.array_equal(kept.found, found):
            self.kept.move_to_end(folders)
            return kept
        listing = self._build(paths, found)
        self.kept[folders] = listing
        if len(self.kept) > LISTINGS_KEPT:
            self.kept.popitem(last=False)
        return listing

    def _build(self, paths: Sequence[str], found: np.ndarray) -> Listing:
        """Every path's embedding (cache first), CHUNK files at a time, in walk order."""
        rows: list[np.ndarray] = []
        readable: list[str] = []
        failures: list[tuple[str, str]] = []
        deadline, embedded = time.monotonic() + self.budget.seconds, 0
        for start in range(0, len(paths), CHUNK):
            prepared: list[PreparedImage] = []
            # Decoded a pass at a time, the budget checked after each: the miss past it stops
            # the chunk there, not once all CHUNK files are decoded (and decoded again when
            # the client, refused, asks once more).
            end = min(start + CHUNK, len(paths))
            for at in range(start, end, self.pass_size):
                window = paths[at : min(at + self.pass_size, end)]
                refs = [ImageRef(path, path=path) for path in window]
                prepared.extend(self.pool.map(self.prepare, refs))
                misses = sum(p.error is None and p.embedding is None for p in prepared)
                self._within_budget(embedded + misses, deadline, len(paths))
            embedded += misses
            self.embedded += misses
            batch = embed_batch(self.encoder, prepared, self.cache, pass_size=self.pass_size)
            vectors = iter(batch.embeddings)
            for path, error in zip(batch.paths, batch.errors, strict=True):
                if error is None:
                    readable.append(path)
                    rows.append(next(vectors))
                else:
                    failures.append((path, error))
        if any(error.startswith(OUTSIDE) for _, error in failures):
            # A link out of the roots: the client can read the file and this side may not, so
            # an answer from here would lack an image that its own search ranks.
            raise RequestError(403, f"the search folders hold links {OUTSIDE}")
        if not rows:
            raise RequestError(400, f"none of the {len(paths)} files could be read")
        matrix = np.stack(rows).astype(np.float16)
        return Listing(tuple(readable), found, matrix, tuple(failures))

    def _within_budget(self, embedded: int, deadline: float, count: int) -> None:
        """RequestError 409 once a search would cost more than its budget (what was embedded
        so far is cached: the next search, or the client's predict requests, reuse it)."""
        if embedded > self.budget.images:
            raise RequestError(
                409,
                f"more than {self.budget.images} of the {count} images are not embedded here "
                "yet: the client embeds them through predict requests",
            )
        if time.monotonic() > deadline:
            raise RequestError(
                409, f"gathering {count} images took over {self.budget.seconds:g} s here"
            )

    def _query(self, text: str) -> np.ndarray:
        """The query's unit vector: each term's text alone, combined by sign (rclip-style)."""
        try:
            terms = parse_query(text)
        except UsageError as error:
            raise RequestError(400, str(error)) from None
        labels = [Label(term.text, (term.text,)) for term in terms]

        def embed(prompts: Sequence[str]) -> np.ndarray:
            return encode_prompts(self.texts, prompts, self.cache)

        rows = label_weights(embed, labels, PLAIN)
        try:
            return combine(rows, [term.sign for term in terms])
        except UsageError as error:
            raise RequestError(400, str(error)) from None
