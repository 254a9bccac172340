"""The client side of `clipcls serve`, in the standard library only (no torch, no LitServe):
what the CLI's --server runs to classify files on a warm server and read back Predictions."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from clipcls.client.allowed import allowed
from clipcls.client.wire import ServerConnection, base_url, machine_id, unreadable
from clipcls.errors import ClipclsError, ImageError, RecordError
from clipcls.images import DEFAULT_MAX_MEGAPIXELS, open_regular, size_error
from clipcls.labels import Label
from clipcls.pathtext import path_to_text
from clipcls.pipeline import EmbedPlan, ModelInfo
from clipcls.prediction import Prediction
from clipcls.prompts import TemplateSet
from clipcls.remote import fetch, is_s3, is_url
from clipcls.vectors import NotAnEmbedding, check_embedding
from clipcls.webfetch import on_private_network

Entry = dict[str, Any] | str  # what a request carries for a file, or why it stays here
IN_FLIGHT = 2  # requests out at once per client
PER_REQUEST = 32  # images per request: large enough to batch, small enough to stream rows back


class ServerClient(ServerConnection):
    """Talks to one server: its facts (model, limits, machine) and predict requests."""

    def predict(self, images: list[dict[str, Any]], request: dict[str, Any]) -> list[Any]:
        """The server's predict objects for these image entries, in their order: files (raw
        bytes under "data") go as one multipart upload, paths and URLs as one JSON request."""
        files = [i for i, entry in enumerate(images) if isinstance(entry.get("data"), bytes)]
        others = [i for i in range(len(images)) if i not in set(files)]
        found: list[Any] = [None] * len(images)
        if files:
            body, kind = _multipart([images[i] for i in files], request)
            self._fill(found, files, self._call("POST", "/v1/predict", body, kind))
        if others:
            body = json.dumps({**request, "images": [images[i] for i in others]}).encode()
            self._fill(found, others, self._call("POST", "/v1/predict", body))
        return found

    def _fill(self, found: list[Any], where: list[int], answer: Any) -> None:
        objects = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(objects, list) or len(objects) != len(where):
            raise unreadable(self.url)
        for i, item in zip(where, objects, strict=True):
            found[i] = item


class RemoteEncoder:
    """The server's text tower, logit scale and bias: enough to score image embeddings here
    (evaluate --server scores each template set on this side, as with Ray)."""

    def __init__(self, client: ServerClient) -> None:
        facts = client.facts
        self.client = client
        self.logit_scale = float(facts["logit_scale"])
        bias = facts.get("logit_bias")
        self.logit_bias = None if bias is None else float(bias)
        keys = [facts.get(name) for name in ("image_cache_key", "text_cache_key")]
        image_key, text_key = (served_key(client, key) for key in keys)
        device = str(facts.get("device", "cpu"))
        self.plan = EmbedPlan(image_cache_key=image_key, text_cache_key=text_key, device=device)
        model, pretrained = client.model
        self.info = ModelInfo(model, pretrained, self.plan.device, str(facts.get("precision")))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        limits = self.client.facts.get("limits", {})
        older = int(limits.get("max_labels", 1000)) * int(limits.get("max_templates", 1))
        step = max(1, int(limits.get("max_texts", older)))  # one slice per request
        parts = []
        for start in range(0, len(texts), step):
            body = {"texts": list(texts[start : start + step])}
            parts.append(self._embeddings(self.client.post(body), len(body["texts"])))
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def _embeddings(self, answer: Any, count: int) -> np.ndarray:
        """count unit vectors of one width from a texts answer (the check a saved file's rows
        get), or ClipclsError saying which is not one (not a numpy traceback)."""
        rows = answer.get("embeddings") if isinstance(answer, dict) else None
        if not isinstance(rows, list) or len(rows) != count or not rows:
            raise unreadable(self.client.url)
        found, width = [], None
        for number, row in enumerate(rows, 1):
            try:
                found.append(check_embedding(row, width))
            except NotAnEmbedding as why:
                raise ClipclsError(
                    f"the server at {self.client.url} sent a text embedding that is no"
                    f" embedding: vector {number} of {count} {why}"
                ) from None
            width = len(found[0])
        return np.stack(found)

    def prepare(self, image: Any) -> Any:
        raise ClipclsError("images are embedded on the server, not prepared here")

    def encode_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        raise ClipclsError("images are embedded on the server, not here")


def served_key(client: ServerConnection, key: Any) -> str | None:
    """The key this side caches what the server sent under, given one it reports for its
    model (None from an older server: nothing is cached). Never a key a local run computes
    under: a server may report any facts, so what it sends is kept apart, in a namespace of
    its own (its URL and the weights it reports), reused only for that same server."""
    if not isinstance(key, str):
        return None
    parts = ["served/1", base_url(client.url), str(client.weights), key]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _multipart(files: list[dict[str, Any]], request: dict[str, Any]) -> tuple[bytes, str]:
    """A multipart/form-data body: the request's fields (lists as JSON), the file names as a
    JSON list (any text, unlike a filename header), then each file's raw bytes."""
    boundary = secrets.token_hex(16)
    fields = {key: value for key, value in request.items() if value is not None}
    fields["names"] = [entry["name"] for entry in files]
    parts: list[bytes] = []
    for key, value in fields.items():
        text = json.dumps(value) if isinstance(value, list | bool) else str(value)
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
        parts.append(head.encode() + text.encode() + b"\r\n")
    for i, entry in enumerate(files):
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; '
            f'filename="{i}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        parts.append(head.encode() + entry["data"] + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class RemoteClassifier:
    """classify_paths on a server: files go as bytes, or as paths where the server says it
    shares this machine's file system and allows the folder; rows come back as Predictions."""

    def __init__(
        self,
        client: ServerClient,
        labels: Sequence[Label],
        templates: TemplateSet,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    ) -> None:
        self.client = client
        self.max_megapixels = max_megapixels  # checked here too: the server's may be higher
        self.embeddings = False  # ask for each image's embedding too (label --save-embeddings)
        self.labels = tuple(labels)
        self.request = {
            "labels": [{"name": label.name, "texts": list(label.texts)} for label in labels],
            "templates": list(templates.templates),
            "top_k": len(labels),
        }
        limits = client.facts.get("limits", {})
        self.per_request = max(1, min(PER_REQUEST, int(limits.get("max_images", PER_REQUEST))))
        self.max_bytes = int(limits.get("max_body_bytes", 64 * 1024**2)) * 3 // 4 - 65536
        here = machine_id()
        self.shared = client.facts.get("machine") == here and bool(client.facts.get("allow_dirs"))

    def classify_paths(self, paths: Iterable[Path | str]) -> Iterator[Prediction]:
        """One Prediction per path, in input order; unreadable files carry an error.

        IN_FLIGHT requests are out at once, so the server batches the next while this side
        reads the answer to the last one.
        """
        pending: deque[Future[list[Prediction]]] = deque()
        with ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="clipcls-send") as pool:
            for batch in self._batches(paths):
                pending.append(pool.submit(self._send, batch))
                if len(pending) >= IN_FLIGHT:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()

    def _batches(self, paths: Iterable[Path | str]) -> Iterator[list[tuple[str, Entry]]]:
        """The paths in requests: at most per_request images and max_bytes of data each."""
        batch: list[tuple[str, Entry]] = []
        size = 0
        for path in paths:
            entry = self._entry(str(path))
            weight = len(entry["data"]) if isinstance(entry, dict) and "data" in entry else 0
            if batch and (len(batch) == self.per_request or size + weight > self.max_bytes):
                yield batch
                batch, size = [], 0
            batch.append((str(path), entry))
            size += weight
        if batch:
            yield batch

    def _entry(self, path: str) -> Entry:
        """What the request carries for path, or the error that keeps it local."""
        name = path_to_text(path)
        here = is_s3(path) or (is_url(path) and on_private_network(path))
        if is_url(path) and not here:
            return self.url_limit(path) or {"url": path, "name": name}
        absolute = os.path.abspath(path)
        if self.shared and not here and allowed(absolute, self.client.facts["allow_dirs"]):
            return size_error(path, self.max_megapixels) or {"path": absolute, "name": name}
        try:
            # s3 with this side's credentials, and the user's own network (loopback, LAN),
            # which a server refuses to fetch, are read here and uploaded
            stream = fetch(path, self.max_megapixels) if here else open_regular(path)
            with stream:
                data = stream.read(self.max_bytes + 1)
        except ImageError as error:
            return str(error)
        except OSError as error:
            return f"cannot read {path}: {error.strerror or error}"
        if len(data) > self.max_bytes:
            return f"too large to send to the server ({len(data):,}+ bytes): {path}"
        return size_error(path, self.max_megapixels, data) or {"data": data, "name": name}

    def url_limit(self, url: str) -> str | None:
        """Why a URL cannot be sent: only the server sees its size, so a lower --max-megapixels
        than the server's cannot be kept."""
        theirs = self.client.facts.get("max_megapixels", DEFAULT_MAX_MEGAPIXELS)
        if not isinstance(theirs, int | float) or self.max_megapixels >= theirs:
            return None
        return (
            f"--max-megapixels {self.max_megapixels:g} cannot be checked for a URL sent to the "
            f"server, which allows {theirs:g}: download it first, or use a server started with "
            f"--max-megapixels {self.max_megapixels:g}: {url}"
        )

    def _send(self, batch: list[tuple[str, Entry]]) -> list[Prediction]:
        entries = [entry for _, entry in batch if isinstance(entry, dict)]
        request = {**self.request, "embedding": self.embeddings}
        answers = iter(self.client.predict(entries, request) if entries else [])
        names = {label.name for label in self.labels}
        return [
            Prediction(path, error=entry)
            if isinstance(entry, str)
            else _prediction(path, next(answers), names, self.client.url)
            for path, entry in batch
        ]


def _prediction(path: str, answer: Any, names: set[str], url: str) -> Prediction:
    """The Prediction a predict object holds; ClipclsError if it is not one for exactly the
    labels asked with finite scores (a label the run never asked for would name a folder)."""
    try:
        return Prediction.from_record(answer, labels=names, path=path)
    except RecordError:
        raise unreadable(url) from None
