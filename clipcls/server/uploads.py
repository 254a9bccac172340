"""A predict request's body as the guard reads it: within the size limit, JSON or a multipart
form, checked; uploaded images go to files in the server's own folder, so the request that
reaches the model worker is small (names and paths), not megabytes of base64 copied through
LitServe's queue."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from clipcls.client.protocol import ImageRef, Limits, RequestError, ServeRequest, parse_request

FORM_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
FORM_FIELDS = ("labels", "templates", "top_k", "embedding", "multi_label", "names")
JSON_FIELDS = ("labels", "templates", "names")  # form fields that may hold a JSON list
DRAIN = 64 * 1024**2  # bytes over the limit still read (and dropped) so the client gets the 413


@dataclass
class Checked:
    """The body to hand on, and the upload files to delete once it is answered."""

    body: bytes
    files: list[Path] = field(default_factory=list)

    def remove(self) -> None:
        for path in self.files:
            path.unlink(missing_ok=True)


class Budget:
    """Bytes of request bodies the HTTP process holds at once, over all connections."""

    def __init__(self, most: int) -> None:
        self.most, self.used = most, 0


class Held:
    """One request's share of the budget, given back when it is answered."""

    def __init__(self, budget: Budget) -> None:
        self.budget, self.bytes = budget, 0

    def take(self, count: int) -> None:
        """Hold count more bytes, or RequestError 503 when the server holds too many."""
        if self.budget.used + count > self.budget.most:
            raise RequestError(503, "the server is busy reading other bodies; try again soon")
        self.budget.used += count
        self.bytes += count

    def release(self) -> None:
        self.budget.used -= self.bytes
        self.bytes = 0


async def read_body(receive: Any, declared: str, limit: int, held: Held) -> bytes:
    """The whole body, or RequestError 413 once past limit (read on to DRAIN, so the client
    can hear the answer before the connection closes), or 503 once the bodies the server
    holds (held's budget) would pass its limit."""
    too_big = RequestError(413, f"the body is over the server's limit of {limit} bytes")
    if declared.isdigit() and int(declared) > limit + DRAIN:
        raise too_big
    if declared.isdigit():
        held.take(min(int(declared), limit))  # at once: no bytes read for a body we cannot hold
    raw = bytearray()
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestError(400, "the client went away")
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen <= limit:
            held.take(max(0, seen - held.bytes))  # beyond what was declared (chunked bodies)
            raw += chunk
        elif seen > limit + DRAIN:
            raise too_big
        if not message.get("more_body"):
            break
    if seen > limit:
        raise too_big
    return bytes(raw)


async def checked_request(
    scope: Any, kind: str, raw: bytes, limits: Limits, allow_dirs: list[str], uploads: Path
) -> Checked:
    """Check a predict (or texts) request and move its image bytes into upload files."""
    checked = Checked(b"")
    roots = allow_dirs  # a client names paths only under these; its uploads are ours
    try:
        if kind.startswith("multipart/form-data"):
            request = await _form(scope, raw, limits, uploads, checked)
            roots = [*allow_dirs, str(uploads)]
        else:
            request = _loads(raw, limits, "the body is not valid JSON")
        parsed = parse_request(request, limits, roots)  # the one check; the worker trusts it
        if isinstance(parsed, ServeRequest):
            images = tuple(_kept(ref, uploads, checked) for ref in parsed.images)
            parsed = replace(parsed, images=images)
        checked.body = json.dumps(parsed.to_record()).encode()
        return checked
    except BaseException:
        checked.remove()
        raise


def _kept(ref: ImageRef, uploads: Path, checked: Checked) -> ImageRef:
    """ref, its bytes (if it has any) moved into an upload file that the worker reads."""
    return ref if ref.data is None else ImageRef(ref.name, path=_stored(ref.data, uploads, checked))


def _stored(data: bytes, uploads: Path, checked: Checked) -> str:
    path = uploads / secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    checked.files.append(path)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)
    return str(path)


async def _form(
    scope: Any, raw: bytes, limits: Limits, uploads: Path, checked: Checked
) -> dict[str, Any]:
    """A multipart form: files under `images` (named by their filenames, or by a `names` JSON
    list), the other fields as text, some of them JSON lists."""
    from starlette.requests import Request

    async def once() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    try:
        form = await Request(scope, once).form(max_files=limits.max_images, max_fields=20)
    except Exception as error:  # python-multipart and starlette raise several kinds
        raise RequestError(400, f"cannot read the multipart form: {error}") from None
    request: dict[str, Any] = {"images": []}
    try:
        for key, value in form.multi_items():
            if key == "images" and not isinstance(value, str):
                path = _stored(await value.read(), uploads, checked)
                name = value.filename or f"image[{len(request['images'])}]"
                request["images"].append({"path": path, "name": name})
            elif key in FORM_FIELDS and isinstance(value, str):
                request[key] = _form_value(key, value, limits)
            else:
                raise RequestError(400, f"unknown form field {key!r}")
    finally:
        await form.close()
    names = request.pop("names", None)
    if names is not None:
        if not isinstance(names, list) or len(names) != len(request["images"]):
            raise RequestError(400, "'names' must list one name per image")
        for entry, name in zip(request["images"], names, strict=True):
            entry["name"] = name
    return request


def _form_value(key: str, value: str, limits: Limits) -> Any:
    if key == "top_k":  # ASCII digits only: isdigit() takes "²" (int() raises) and "١"
        return int(value) if value.isascii() and value.isdigit() and len(value) < 10 else value
    if key in ("embedding", "multi_label"):  # another word stays text: the request's 400
        return FORM_BOOLEANS.get(value.strip().lower(), value)
    if key in JSON_FIELDS and value.startswith("["):
        return _loads(value.encode(), limits, f"'{key}' is not a JSON list")
    return value


def _loads(raw: bytes, limits: Limits, why: str) -> Any:
    """Decode JSON whose number of values a request can need bounds: 60 MB of `[],[],...`
    would otherwise become 20 million Python lists (1.4 GB) before any limit is checked."""
    needed = 4 * (limits.max_images + limits.max_labels + limits.max_templates)
    most = needed + 2 * limits.max_texts + 1000
    found = raw.count(b",") + raw.count(b"[") + raw.count(b"{")  # >= the values, minus 1
    if found > most:
        raise RequestError(400, f"{found} JSON values; no request needs more than {most}")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: RecursionError
        raise RequestError(400, why) from None
