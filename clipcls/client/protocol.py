"""What `clipcls serve` accepts: a JSON request read and checked against the server's limits
(shared by the server, which refuses with 4xx, and the client, which builds requests)."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from clipcls.client.allowed import allowed
from clipcls.client.checks import RequestError as RequestError  # re-exported: the vocabulary
from clipcls.client.checks import check_prompts, check_strings
from clipcls.client.search_request import SearchRequest, parse_search
from clipcls.errors import ClipclsError, ImageError
from clipcls.labels import Label, check_labels, parse_label
from clipcls.prompts import (
    DEFAULT_TEMPLATES,
    TemplateSet,
    builtin_dir,
    load_templates,
    parse_template_file,
    single_templates,
)
from clipcls.remote import HTTP
from clipcls.scoring.spec import ScoreSpec
from clipcls.webfetch import check_url

MAX_PROMPT_CHARS = 1000  # per label text or template; CLIP's 77 tokens are far fewer
ERROR_STATUS = "status"  # in a worker's error answer: the HTTP status the guard sends it with


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server."""

    max_body_bytes: int = 64 * 1024**2
    max_images: int = 256
    max_labels: int = 1000
    max_templates: int = 200
    max_top_k: int = 1000
    seconds: float = 60.0
    max_texts: int = 4096  # prompts one request may have the text tower embed
    max_pending_bytes: int = 4 * 64 * 1024**2  # bodies held at once, over all connections


@dataclass(frozen=True)
class ImageRef:
    """One image of a request: its bytes, a URL the server fetches, or a path on its disk;
    name is how the answer names it (the path column of predict's output)."""

    name: str
    data: bytes | None = None
    url: str | None = None
    path: str | None = None

    def to_record(self) -> dict[str, str]:
        """The name, and the one of data (base64), url or path the image has."""
        data = None if self.data is None else base64.b64encode(self.data).decode()
        found = {"data": data, "url": self.url, "path": self.path}
        return {"name": self.name, **{key: v for key, v in found.items() if v is not None}}

    @classmethod
    def from_record(cls, record: dict[str, str]) -> ImageRef:
        """The image to_record wrote, taken as it is (it was checked before it was written)."""
        data = None if "data" not in record else base64.b64decode(record["data"])
        return cls(record["name"], data, record.get("url"), record.get("path"))


@dataclass(frozen=True)
class ServeRequest:
    """A checked request: images, how to score them (the same ScoreSpec a local run scores
    with: labels, templates, mode), top-k, and whether to add embeddings."""

    images: tuple[ImageRef, ...]
    spec: ScoreSpec = field(default_factory=lambda: ScoreSpec((), _default_templates()))
    top_k: int = 5
    embedding: bool = False
    multi_label: bool | None = None  # None: the server's default (serve --multi-label)

    @property
    def labels(self) -> tuple[Label, ...]:
        return self.spec.labels

    @property
    def templates(self) -> TemplateSet:
        return self.spec.templates

    def to_record(self) -> dict[str, Any]:
        """The checked request as JSON, as the guard hands it to the model worker."""
        return {
            "images": [ref.to_record() for ref in self.images],
            **self.spec.to_record(),
            "top_k": self.top_k,
            "embedding": self.embedding,
            "multi_label": self.multi_label,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ServeRequest:
        """The request to_record wrote, taken as it is: parse_request checked it already."""
        return cls(
            tuple(ImageRef.from_record(item) for item in record["images"]),
            ScoreSpec.from_record(record),
            int(record["top_k"]),
            bool(record["embedding"]),
            record.get("multi_label"),
        )


def _default_templates() -> TemplateSet:
    return load_templates(DEFAULT_TEMPLATES)


@dataclass(frozen=True)
class TextsRequest:
    """Texts to embed with the text tower (what `evaluate --server` scores with)."""

    texts: tuple[str, ...]

    def to_record(self) -> dict[str, Any]:
        """The texts as JSON, as the guard hands them to the model worker."""
        return {"texts": list(self.texts)}


AnyRequest = ServeRequest | TextsRequest | SearchRequest


def request_from_record(record: dict[str, Any]) -> AnyRequest:
    """The request a to_record wrote (after parse_request checked it), not checked again."""
    if "search" in record:
        return SearchRequest.from_record(record)
    if "texts" in record:
        return TextsRequest(tuple(record["texts"]))
    return ServeRequest.from_record(record)


def parse_request(body: Any, limits: Limits, allow_dirs: Sequence[str]) -> AnyRequest:
    """Check a decoded JSON body; RequestError (400, 403 or 413) says what is wrong."""
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object")
    check_strings(body)
    if "texts" in body:
        return _texts(body, limits)
    if "search" in body:
        return parse_search(body, limits.max_top_k, allow_dirs)
    unknown = set(body) - {"images", "labels", "templates", "top_k", "embedding", "multi_label"}
    if unknown:
        raise RequestError(400, f"unknown fields: {', '.join(sorted(unknown))}")
    images = body.get("images")
    if not isinstance(images, list) or not images:
        raise RequestError(400, "'images' must be a non-empty list")
    if len(images) > limits.max_images:
        raise RequestError(
            413, f"{len(images)} images in one request; the limit is {limits.max_images}"
        )
    refs = tuple(_image(item, i, allow_dirs) for i, item in enumerate(images))
    top_k = body.get("top_k", 5)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= limits.max_top_k:
        raise RequestError(400, f"'top_k' must be a whole number from 1 to {limits.max_top_k}")
    embedding, multi_label = body.get("embedding", False), body.get("multi_label")
    if not isinstance(embedding, bool) or not isinstance(multi_label, bool | None):
        raise RequestError(400, "'embedding' and 'multi_label' must be true or false")
    labels = _labels(body.get("labels"), limits)
    templates = _templates(body.get("templates", DEFAULT_TEMPLATES), limits)
    texts = (*templates.templates, *(text for label in labels for text in label.texts))
    longest = max(len(text) for text in texts)
    if longest > MAX_PROMPT_CHARS:  # CLIP reads 77 tokens: the rest is only work (x templates)
        raise RequestError(
            413, f"a label or template of {longest} characters; the limit is {MAX_PROMPT_CHARS}"
        )
    prompts = sum(len(label.texts) for label in labels) * len(templates.templates)
    if prompts > limits.max_texts:
        raise RequestError(
            413, f"{prompts} prompts (label texts x templates); the limit is {limits.max_texts}"
        )
    spec = ScoreSpec(labels, templates, bool(multi_label))
    return ServeRequest(refs, spec, top_k, embedding, multi_label)


def _texts(body: dict[str, Any], limits: Limits) -> TextsRequest:
    texts = body["texts"]
    if set(body) != {"texts"}:
        raise RequestError(400, "a texts request holds only 'texts'")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise RequestError(400, "'texts' must be a non-empty list of strings")
    if len(texts) > limits.max_texts:
        raise RequestError(413, f"{len(texts)} texts; the limit is {limits.max_texts}")
    check_prompts(texts)
    longest = max(len(text) for text in texts)
    if longest > 2 * MAX_PROMPT_CHARS:  # a label in a template
        raise RequestError(
            413, f"a text of {longest} characters; the limit is {2 * MAX_PROMPT_CHARS}"
        )
    return TextsRequest(tuple(texts))


def _labels(value: Any, limits: Limits) -> tuple[Label, ...]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not value:
        raise RequestError(400, "'labels' must be a non-empty list (or a comma-separated string)")
    if len(value) > limits.max_labels:
        raise RequestError(413, f"{len(value)} labels; the limit is {limits.max_labels}")
    try:
        labels = [_label(item) for item in value]
        return check_labels(labels)
    except ClipclsError as error:
        raise RequestError(400, f"labels: {error}") from None


def _label(item: Any) -> Label:
    # The texts are checked as they came: a Label reads a lone surrogate as the tokenizer
    # would, and a server takes only text that is UTF-8 (a client sends what a Label made).
    if isinstance(item, str):
        check_prompts([item])
        return parse_label(item)
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        texts = item.get("texts", [item["name"]])
        if isinstance(texts, list) and texts and all(isinstance(t, str) and t for t in texts):
            check_prompts(texts)
            return Label(item["name"], tuple(texts))
    raise RequestError(400, 'each label must be a string or {"name": ..., "texts": [...]}')


def _templates(value: Any, limits: Limits) -> TemplateSet:
    try:
        if isinstance(value, str):
            builtin = builtin_dir() / f"{value}.txt"
            if re.fullmatch(r"[\w-]+", value) and builtin.is_file():  # built-in, never a file
                return parse_template_file(builtin, value)
            raise RequestError(400, f"'templates': {value!r} is not a built-in template set")
        if isinstance(value, list) and value and all(isinstance(t, str) for t in value):
            if len(value) > limits.max_templates:
                limit = limits.max_templates
                raise RequestError(413, f"{len(value)} templates; the limit is {limit}")
            check_prompts(value)  # as they came, as a label's texts
            return single_templates(value)
    except RequestError:
        raise
    except ClipclsError as error:
        raise RequestError(400, f"templates: {error}") from None
    raise RequestError(400, "'templates' must be a built-in set name or a list of templates")


def _image(item: Any, index: int, allow_dirs: Sequence[str]) -> ImageRef:
    if not isinstance(item, dict) or len({"data", "url", "path"} & set(item)) != 1:
        raise RequestError(400, f"images[{index}] must hold exactly one of data, url or path")
    name = item.get("name", item.get("url") or item.get("path") or f"image[{index}]")
    if not isinstance(name, str):
        raise RequestError(400, f"images[{index}].name must be a string")
    if "data" in item:
        try:
            data = base64.b64decode(item["data"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise RequestError(400, f"images[{index}].data is not base64") from None
        return ImageRef(name, data=data)
    if "url" in item:
        return ImageRef(name, url=_url(item["url"], index))
    path = item["path"]
    if not isinstance(path, str) or not os.path.isabs(path):
        raise RequestError(400, f"images[{index}].path must be an absolute path")
    try:
        os.fsencode(path)  # a lone surrogate (not an escaped byte) names no file
    except UnicodeError:
        raise RequestError(400, f"images[{index}].path is not a file name") from None
    if "\0" in path:
        raise RequestError(400, f"images[{index}].path holds a NUL character")
    if not allowed(path, allow_dirs):
        raise RequestError(403, f"images[{index}].path is outside the server's --allow-dir roots")
    return ImageRef(name, path=path)


def _url(url: Any, index: int) -> str:
    """An http(s) URL the server may try to fetch (where it may go is decided on fetching)."""
    if not isinstance(url, str) or not url.lower().startswith(HTTP):
        raise RequestError(400, f"images[{index}].url must be an http(s) URL")
    try:
        check_url(url)
    except ImageError as error:
        raise RequestError(400, f"images[{index}].url: {error}") from None
    return url
