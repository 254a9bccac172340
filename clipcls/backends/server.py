"""The server backend: a warm `clipcls serve` server embeds what this side's embedding cache
lacks (its answers kept apart, keyed by that server: client.predict.served_key); this side
scores with the same Scorer as a local run, sending files only where it must; loads no model."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from clipcls.backends.base import (
    BackendConfig,
    BaseBackend,
    Expected,
    Hooks,
    ImageStore,
    Scaled,
    image_store,
)
from clipcls.classify import Prediction, default_batch_size, encode_prompts
from clipcls.client.predict import IN_FLIGHT, RemoteClassifier, RemoteEncoder, ServerClient
from clipcls.client.wire import base_url, unreadable
from clipcls.errors import UsageError
from clipcls.labels import Label
from clipcls.pipeline import Chunk, EmbeddedBatch, ModelInfo, PreparedImage, embed_batch, look_up
from clipcls.prompts import single_templates
from clipcls.remote import is_url
from clipcls.settings import model_id
from clipcls.vectors import NotAnEmbedding, check_embedding

# What an embedding request names: the server scores every image it embeds, so it needs one
# label; the scores are dropped (this side scores the embeddings with the run's labels).
PROBE = (Label.plain("image"),)


def connect_server(
    url: str,
    asked: str | None,
    options: Mapping[str, Any],
    hooks: Hooks,
    quiet: bool = False,
) -> ServerClient:
    """The `clipcls serve` server at url, refused if it runs another model than asked, or
    otherwise than the options given explicitly (device, precision, ...) ask."""
    from clipcls.client.expect import setting_conflict

    client = ServerClient(url)
    model, pretrained = client.model
    named = model_id(model, pretrained)
    if asked is not None and asked not in (model, named):
        raise UsageError(f"--model {asked}: the server at {client.url} runs {named}")
    conflict = setting_conflict(client, dict(options))
    if conflict is not None:
        raise UsageError(f"{conflict}; drop the option, or use a server started with it")
    if not quiet:
        hooks.notice(client.describe())
    return client


class ServerBackend(BaseBackend):
    """The server at config.server; opening it asks what it runs (and waits while it loads)."""

    name = "server"

    def __init__(self, config: BackendConfig) -> None:
        if config.server is None:
            raise UsageError("the server backend needs a URL (--server)")
        super().__init__(config)
        self.client = connect_server(
            config.server, config.asked_model, config.server_options, config.hooks, config.quiet
        )
        self.encoder = RemoteEncoder(self.client)
        # The width of the first embeddings it sent (texts or images): the others must match.
        self.dim: int | None = None

    @property
    def weights(self) -> str | None:
        return self.client.weights

    @property
    def info(self) -> ModelInfo:
        return self.encoder.info

    @property
    def known_model(self) -> str | None:
        return self.model_id  # the server said what it runs when it was opened

    @property
    def served_by(self) -> str | None:
        return base_url(self.client.url)

    @property
    def model_id(self) -> str:
        return model_id(*self.client.model)

    def start(self, expected: Expected | None = None) -> None:
        """Nothing to load: the server is warm."""

    def search_folders(self, folders: Sequence[str], text: str, k: int) -> dict[str, Any] | None:
        """The server's own search of folders (absolute), or None: this side searches."""
        return self.client.search_folders(folders, text, k)

    @property
    def text_model(self) -> Scaled:
        return self.encoder

    @property
    def batch_size(self) -> int:
        return self.config.batch_size or default_batch_size(self.encoder.plan.device)

    def embed_images(self, paths: Iterable[Path | str]) -> Iterator[Prediction]:
        for batch in self._embedded(paths):
            vectors = iter(batch.embeddings)
            for path, error in zip(batch.paths, batch.errors, strict=True):
                if error is not None:
                    yield Prediction(path, error=error)
                else:
                    yield Prediction(path, embedding=next(vectors))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        cache = self.cache if self.encoder.plan.text_cache_key is not None else None
        found = encode_prompts(self.encoder, texts, cache)  # the server embeds only the misses
        width = found.shape[1] if found.ndim == 2 and len(found) else None
        if width is not None and self.dim is not None and width != self.dim:
            raise unreadable(self.client.url)  # its images, embedded first, are of another width
        self.dim = self.dim or width
        return found

    @property
    def image_store(self) -> ImageStore | None:
        key = self.encoder.plan.image_cache_key
        return image_store(self.cache, key, self.config.settings.max_megapixels)

    def _embedded(self, paths: Iterable[Path | str]) -> Iterator[EmbeddedBatch]:
        """The paths' image embeddings in batches, in input order (errors in place): those in
        this side's cache as they are, the others from the server (then cached here).
        IN_FLIGHT batches' requests are out at once, as a run without a cache sends them."""
        remote = RemoteClassifier(
            self.client, PROBE, single_templates(["{}"]), self.config.settings.max_megapixels
        )
        remote.embeddings = True
        pending: deque[tuple[Chunk, Future[list[Prediction]]]] = deque()
        with ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="clipcls-miss") as pool:
            for chunk in self._chunks(paths, remote):
                pending.append((chunk, pool.submit(_asked, remote, chunk.misses)))
                if len(pending) >= IN_FLIGHT:
                    yield self._joined(*pending.popleft())
            while pending:
                yield self._joined(*pending.popleft())

    def _chunks(self, paths: Iterable[Path | str], remote: RemoteClassifier) -> Iterator[Chunk]:
        """The paths in batches (a local run's), with what this side's cache holds for them;
        a URL that this side's --max-megapixels keeps from the server is not answered here
        either (its error row says why)."""
        plan, settings = self.encoder.plan, self.config.settings
        model = plan.image_cache_key
        cache = self.cache if model is not None else None
        size = self.config.batch_size or default_batch_size(plan.device)
        iterator = iter(paths)
        while batch := [str(path) for path in itertools.islice(iterator, size)]:
            chunk = look_up(batch, cache, model, settings.max_megapixels, self.dim)
            chunk.hits = {
                path: vector
                for path, vector in chunk.hits.items()
                if not (is_url(path) and remote.url_limit(path))
            }
            yield chunk

    def _joined(self, chunk: Chunk, asked: Future[list[Prediction]]) -> EmbeddedBatch:
        """The chunk in input order: cached embeddings, the server's for the misses (cached
        here from now on), and errors."""
        answers = iter(asked.result())
        items: list[PreparedImage] = []
        fresh = []
        for path, key in zip(chunk.paths, chunk.keys, strict=True):
            if key is not None and key.path in chunk.hits:
                items.append(PreparedImage(path, embedding=chunk.hits[key.path]))
                continue
            answer = next(answers)
            if answer.error is not None:
                items.append(PreparedImage(path, error=answer.error))
                continue
            vector = self._checked(answer.embedding, self.dim or _width(items))
            self.dim = self.dim or len(vector)
            items.append(PreparedImage(path, embedding=vector))
            if key is not None:
                fresh.append((key, vector))
        model = self.encoder.plan.image_cache_key
        if fresh and model is not None and self.cache is not None:
            self.cache.put_images(model, fresh)
        return embed_batch(self.encoder, items)  # nothing left to compute: only stacked

    def _checked(self, vector: np.ndarray | None, dim: int | None) -> np.ndarray:
        """A server's image embedding: one finite unit vector (of dim floats, where known)."""
        try:
            return check_embedding(vector, dim)
        except NotAnEmbedding:
            raise unreadable(self.client.url) from None


def _asked(remote: RemoteClassifier, paths: list[str]) -> list[Prediction]:
    """The server's answers for paths (none asked for none)."""
    return list(remote.classify_paths(paths)) if paths else []


def _width(items: Sequence[PreparedImage]) -> int | None:
    """The length of the first embedding among items, if any."""
    return next((len(item.embedding) for item in items if item.embedding is not None), None)
