"""The model side of `clipcls serve`: LitServe batches concurrent requests, this worker decodes
their images in threads (or finds their embeddings in its cache), embeds them in one pass and
scores each request with its own labels (text classifiers kept per label set), answering with
predict's JSONL objects."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import litserve as ls
import numpy as np

from clipcls.cache import EmbeddingCache
from clipcls.classify import Prediction, PromptTower, default_batch_size, encode_prompts
from clipcls.client.protocol import (
    ERROR_STATUS,
    AnyRequest,
    ImageRef,
    Limits,
    RequestError,
    ServeRequest,
    TextsRequest,
    request_from_record,
)
from clipcls.client.search_request import SearchRequest
from clipcls.errors import ImageError
from clipcls.fewshot.served import ServedSupport, served_support
from clipcls.filekey import FileKey
from clipcls.images import load_image, size_error
from clipcls.pipeline import EmbeddedBatch, PreparedImage, embed_batch, embed_paths
from clipcls.remote import fetch
from clipcls.scoring.scorer import Scorer
from clipcls.scoring.spec import SUPPORT_NOT_MULTI_LABEL, build_scorer
from clipcls.server.deadline import DeadlineEncoder, OutOfTime
from clipcls.server.roots import OpenRoots, Root, resolve_roots
from clipcls.server.searching import Budget, ServedSearch
from clipcls.settings import ModelSettings
from clipcls.version import __version__
from clipcls.webfetch import UrlPolicy, server_policy

PR_SET_PDEATHSIG = 1  # prctl(2)
CLASSIFIERS_KEPT = 64  # label sets whose text classifiers stay ready
REQUESTS_PER_BATCH = 16  # concurrent requests LitServe hands over at once
BATCH_WAIT = 0.005  # seconds LitServe waits for more requests to join a batch


class ClipclsAPI(ls.LitAPI):  # type: ignore[misc]
    """One model, loaded once in LitServe's worker process."""

    support: ServedSupport | None = None  # serve --support's examples, once set up
    multi_label = False  # serve --multi-label: for requests that do not say

    def __init__(
        self,
        settings: ModelSettings,
        limits: Limits,
        allow_dirs: list[str],
        info_file: Path,
        reach: Reach | None = None,
        cached: bool = True,
        support: Path | None = None,
        multi_label: bool = False,
    ) -> None:
        super().__init__(
            max_batch_size=REQUESTS_PER_BATCH, batch_timeout=BATCH_WAIT, api_path="/v1/predict"
        )
        self.settings, self.limits, self.allow_dirs = settings, limits, allow_dirs
        self.info_file = info_file
        self.cached = cached  # keep an embedding cache (serve --no-cache: none)
        self.reach = reach or Reach(resolve_roots(allow_dirs), server_policy((), limits.seconds))
        self.parent = os.getpid()  # built in the main process; setup runs in the worker
        self.support_folder = support  # serve --support: embedded once the model is up
        self.multi_label = multi_label  # serve --multi-label: for requests that do not say

    def setup(self, device: str) -> None:
        from clipcls.engine.factory import open_model

        die_with_parent(self.parent)
        self.roots = OpenRoots(self.reach.roots)  # held open: a root swapped later means nothing
        self.encoder = open_model(self.settings)
        self.texts = DeadlineEncoder(self.encoder)  # stops a request's prompts at --timeout
        cache = EmbeddingCache(self.settings.resolved_cache_dir()) if self.cached else None
        self.cache: EmbeddingCache | None = cache
        self.lookups = threading.Lock()  # the decode threads share the cache's one connection
        self.classifiers: OrderedDict[Any, Scorer] = OrderedDict()
        self.batch_size = default_batch_size(self.encoder.plan.device)
        self.pool = ThreadPoolExecutor(max(1, self.encoder.plan.decode_workers))
        budget = Budget(self.limits.max_images, self.limits.seconds)
        self.searches = ServedSearch(
            self.encoder,
            self.texts,
            cache,
            self._prepare_one,
            self.roots.scan,
            self.pool,
            self.batch_size,
            budget,
        )
        notes: list[str] = []  # said by the serve command once the server is ready
        if self.support_folder is not None:
            self.support = served_support(self.support_folder, self._embed, notes.append)
        info = self.encoder.info
        facts = {
            "clipcls": __version__,
            "model": info.model,
            "pretrained": info.pretrained,
            "weights": self.encoder.weights,  # name:tag, or the digest of the files' bytes
            "device": info.device,
            "precision": info.precision,
            "exact_decode": self.settings.exact_decode,
            "max_megapixels": self.settings.max_megapixels,
            "logit_scale": self.encoder.logit_scale,
            "logit_bias": self.encoder.logit_bias,
            # what a client keys its own cache by: the embeddings a local run of the model makes
            "image_cache_key": self.encoder.plan.image_cache_key,
            "text_cache_key": self.encoder.plan.text_cache_key,
            "support": {**self.support.facts(), "notes": notes} if self.support else None,
        }
        partial = self.info_file.with_suffix(".partial")
        partial.write_text(json.dumps(facts))
        partial.replace(self.info_file)  # the info endpoint reads it once the model is up

    # Unannotated on purpose: LitServe reads the annotation to pick how FastAPI parses the body,
    # and an unannotated request is the JSON body as a dict.
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        try:  # checked by the guard in front, which hands on its record of the checked request
            return request_from_record(request)
        except Exception as error:  # a failure here must not fail the batch
            return failed(400, f"cannot read the request: {error}")

    def batch(self, inputs: list[Any]) -> list[Any]:
        return inputs

    def unbatch(self, output: list[Any]) -> list[Any]:
        return output

    def predict(self, requests: list[AnyRequest | dict[str, Any]]) -> list[Any]:
        """Embed every image of every request together, then score each request; whatever
        goes wrong with one request is its own error answer, the others are answered."""
        refs = [ref for r in requests if isinstance(r, ServeRequest) for ref in r.images]
        prepared = list(self.pool.map(self._prepare_one, refs))
        embedded = embed_batch(self.encoder, prepared, self.cache, pass_size=self.batch_size)
        answers: list[Any] = []
        start = 0
        self.texts.deadline = time.monotonic() + self.limits.seconds  # the guard's 504 by then
        for request in requests:
            count = len(request.images) if isinstance(request, ServeRequest) else 0
            mine = embedded.part(start, start + count)
            start += count
            try:
                answers.append(self._one(request, mine))
            except OutOfTime as error:
                answers.append(failed(504, str(error)))
            except RequestError as error:  # this request asks what the server cannot do
                answers.append(failed(error.status, str(error)))
            except Exception as error:  # noqa: BLE001 -- one request's failure stays its own
                answers.append(failed(500, f"cannot answer this request: {error}"))
        return answers

    def _one(self, request: AnyRequest | dict[str, Any], images: EmbeddedBatch) -> dict[str, Any]:
        if isinstance(request, dict):  # decode_request's error answer
            return request
        if isinstance(request, SearchRequest):  # folders ranked from this side's cache
            return self.searches.answer(request)
        if isinstance(request, TextsRequest):
            vectors = encode_prompts(self.texts, list(request.texts), self.cache)
            return {"embeddings": vectors.tolist()}
        return self._answer(request, images)

    def _prepare_one(self, ref: ImageRef) -> PreparedImage:
        try:
            return self._prepare(ref)
        except Exception as error:  # noqa: BLE001 -- an image's failure is its own row
            return PreparedImage(ref.name, error=f"cannot read {ref.name}: {error}")

    def _prepare(self, ref: ImageRef) -> PreparedImage:
        plan = self.encoder.plan
        try:
            source, key = self._source(ref)
            found = self._cached(key)
            if found is not None:  # still within --max-megapixels, from the header alone
                error = size_error(ref.name, plan.max_megapixels, source)
                return PreparedImage(ref.name, error=error, embedding=None if error else found)
            where = ref.path or ref.url or ref.name
            image = load_image(where, plan.draft_size, plan.max_megapixels, source)
            return PreparedImage(ref.name, self.encoder.prepare(image), key=key)
        except ImageError as error:  # named as the client named it, not by an upload's path
            message = str(error)
            return PreparedImage(ref.name, error=message.replace(ref.path or ref.name, ref.name))
        except (OSError, ValueError, RuntimeError) as error:
            return PreparedImage(ref.name, error=f"cannot preprocess {ref.name}: {error}")

    def _source(self, ref: ImageRef) -> tuple[bytes | BinaryIO | None, FileKey | None]:
        """A path opened beneath its --allow-dir root, or a URL fetched within the server's
        URL policy: the bytes the image is decoded from, never read again by name; and the
        key its embedding is cached under: a file's from the file opened, bytes' (uploads,
        URLs) from their content, so that the same bytes sent twice are embedded once."""
        keyed = self.cache is not None
        data = ref.data
        if ref.path is not None:
            stream = self.roots.open(ref.path)
            if os.path.dirname(ref.path) != self.reach.uploads:
                return stream, FileKey.of_open(ref.path, stream.fileno()) if keyed else None
            with stream:  # an upload: its request's body, within the size limit
                data = stream.read()
        elif ref.url is not None:
            policy = self.reach.url_policy
            data = fetch(ref.url, self.encoder.plan.max_megapixels, policy).read()
        return data, FileKey.of_content(data) if keyed and data is not None else None

    def _cached(self, key: FileKey | None) -> np.ndarray | None:
        """The embedding the cache holds for key under the model's image key, if any."""
        model = self.encoder.plan.image_cache_key
        if key is None or self.cache is None or model is None:
            return None
        with self.lookups:
            return self.cache.get_images(model, [key]).get(key.path)

    def _embed(self, paths: Iterable[Path | str]) -> Iterator[Prediction]:
        """The support examples' embeddings (from the cache where it holds them), or errors."""
        for batch in embed_paths(self.encoder, paths, self.batch_size, self.cache):
            vectors = iter(batch.embeddings)
            for path, error in zip(batch.paths, batch.errors, strict=True):
                embedding = None if error is not None else next(vectors)
                yield Prediction(path, error=error, embedding=embedding)

    def _answer(self, request: ServeRequest, embedded: EmbeddedBatch) -> dict[str, Any]:
        predictions = self._scorer(request).predict_embedded(embedded)
        top_k, embedding = request.top_k, request.embedding
        return {"predictions": [p.to_record(top_k, embedding) for p in predictions]}

    def _scorer(self, request: ServeRequest) -> Scorer:
        """The request's labels' scorer, with the examples of those labels (serve --support),
        each label's probability its own with multi_label (the request's, else the server's)."""
        multi = self.multi_label if request.multi_label is None else request.multi_label
        if multi and self.support is not None:
            raise RequestError(400, SUPPORT_NOT_MULTI_LABEL.replace("--multi-label", "multi_label"))
        key = (request.labels, request.templates.templates, multi)
        found = self.classifiers.get(key)
        if found is None:
            support = self.support.for_labels(request.labels) if self.support else None
            spec = replace(request.spec, multi_label=multi, support=support)  # the server's part
            found = build_scorer(spec, PromptTower(self.texts, self.cache))
            self.classifiers[key] = found
            if len(self.classifiers) > CLASSIFIERS_KEPT:
                self.classifiers.popitem(last=False)
        self.classifiers.move_to_end(key)
        return found


@dataclass(frozen=True)
class Reach:
    """What the worker may read besides uploads: files beneath the roots resolved at start,
    and URLs within the URL policy."""

    roots: tuple[Root, ...]
    url_policy: UrlPolicy
    uploads: str | None = None  # the folder the guard writes uploads to (keyed by content)


def failed(status: int, message: str) -> dict[str, Any]:
    """One request's error answer; the guard sends it with its own HTTP status."""
    return {"error": message, ERROR_STATUS: status}


def die_with_parent(parent: int) -> None:
    """Have the kernel stop this process when the server's main process dies, even by SIGKILL
    (Linux): else LitServe's worker and HTTP processes live on, holding the port."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(0)


def read_info(info_file: Path) -> dict[str, Any] | None:
    """The worker's facts once its model is up, else None."""
    try:
        return dict(json.loads(info_file.read_text()))
    except (OSError, ValueError):
        return None
