"""The worker's answer to a search request: the folders collected as `clipcls search` collects
them (search/collect.py), the worker's cache and image tower the embedding source, within a
budget; the matrix held in memory while every file's version holds, so that a repeat query
costs the walk, a stat per file, the query's text embedding (cached) and an exact top-k."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipcls.backends.base import Expected, ImageStore
from clipcls.cache import EmbeddingCache
from clipcls.classify import encode_prompts
from clipcls.client.allowed import OUTSIDE
from clipcls.client.checks import RequestError
from clipcls.client.protocol import ImageRef
from clipcls.client.search_request import SearchRequest
from clipcls.errors import UsageError
from clipcls.images import Scan
from clipcls.pipeline import Encoder, PreparedImage, embed_batch
from clipcls.prediction import Prediction
from clipcls.search.collect import collect, query_vector
from clipcls.search.query import top_k
from clipcls.search.store import HeldListings
from clipcls.settings import model_id

CHUNK = 256  # images decoded at once: bounds the preprocessed tensors held


@dataclass(frozen=True)
class Budget:
    """What one search may cost the worker, which answers nobody else meanwhile: images put
    through the image tower (a predict request's limit), and seconds gathering the matrix.
    Past either, 409: the client searches on its side, embedding what is missing through
    predict requests that share the worker fairly (and fill this side's cache for next time)."""

    images: int = 256
    seconds: float = 60.0


class ServedSearch:
    """Searches over folders: the worker's encoder and cache as the embedding source of a
    search's collection, and the matrices of the last few folder sets held in memory."""

    def __init__(
        self,
        encoder: Encoder,
        texts: Encoder,
        cache: EmbeddingCache | None,
        prepare: Callable[[ImageRef], PreparedImage],
        scan: Scan,
        pool: ThreadPoolExecutor,
        pass_size: int,
        budget: Budget = Budget(),
    ) -> None:
        self.encoder, self.texts, self.cache = encoder, texts, cache
        # prepare opens each file, and scan lists each folder, beneath the --allow-dir roots
        self.prepare, self.scan, self.pool, self.pass_size = prepare, scan, pool, pass_size
        self.budget = budget
        self.held = HeldListings()
        self.embedded = 0  # images put through the image tower here (a warm query adds none)
        self.lock = threading.Lock()

    def answer(self, request: SearchRequest) -> dict[str, Any]:
        """{"search": [{"rank", "path", "score"}...], "failures": [[path, error]...],
        "embedded": images this query put through the image tower (0 once warm)}."""
        before = self.embedded
        try:
            with self.lock:  # LitServe runs one batch at a time; the lock keeps that true here
                found = collect(self, request.folders, held=self.held, scan=self.scan)
                vector = query_vector(self, request.query, [], None)
        except UsageError as error:  # no image, none readable, a query with no direction
            raise RequestError(400, str(error)) from None
        hits = [
            {"rank": rank, "path": found.paths[row], "score": score}
            for rank, (row, score) in enumerate(top_k(found.matrix, vector, request.k), 1)
        ]
        failures = [list(item) for item in found.failures]
        return {"search": hits, "failures": failures, "embedded": self.embedded - before}

    @property
    def model_id(self) -> str:
        return model_id(self.encoder.info.model, self.encoder.info.pretrained)

    @property
    def image_store(self) -> ImageStore | None:
        """None: matrices are held in memory only. One stored beside a cache that a local
        run shares may hold, through a link, a file outside the --allow-dir roots."""
        return None

    def start(self, expected: Expected | None = None) -> None:
        """Nothing to start: the worker's model is loaded."""

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return encode_prompts(self.texts, texts, self.cache)

    def embed_images(self, paths: Iterable[Path | str]) -> Iterator[Prediction]:
        """Every path's embedding (the cache's first), CHUNK files decoded at a time, in walk
        order; RequestError 409 past the budget, 403 at a link out of the roots."""
        listed = [str(path) for path in paths]
        deadline, embedded = time.monotonic() + self.budget.seconds, 0
        for start in range(0, len(listed), CHUNK):
            chunk = listed[start : start + CHUNK]
            prepared = self._prepared(chunk, embedded, deadline, len(listed))
            misses = sum(p.error is None and p.embedding is None for p in prepared)
            embedded += misses
            self.embedded += misses
            batch = embed_batch(self.encoder, prepared, self.cache, pass_size=self.pass_size)
            vectors = iter(batch.embeddings)
            for path, error in zip(batch.paths, batch.errors, strict=True):
                embedding = None if error is not None else next(vectors)
                yield Prediction(path, error=error, embedding=embedding)

    def _prepared(
        self, chunk: Sequence[str], embedded: int, deadline: float, count: int
    ) -> list[PreparedImage]:
        """The chunk decoded a pass at a time (or found in the cache), the budget checked
        after each: the miss past it stops the chunk there, not once all CHUNK files are
        decoded (and decoded again when the client, refused, asks once more)."""
        prepared: list[PreparedImage] = []
        for at in range(0, len(chunk), self.pass_size):
            refs = [ImageRef(path, path=path) for path in chunk[at : at + self.pass_size]]
            prepared.extend(self.pool.map(self.prepare, refs))
            misses = sum(p.error is None and p.embedding is None for p in prepared)
            self._within_budget(embedded + misses, deadline, count)
            if any((p.error or "").startswith(OUTSIDE) for p in prepared):
                # A link out of the roots: the client can read the file and this side may
                # not, so an answer from here would lack an image that its own search ranks.
                raise RequestError(403, f"the search folders hold links {OUTSIDE}")
        return prepared

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
