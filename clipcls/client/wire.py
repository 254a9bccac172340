"""One connection to a `clipcls serve` server, in the standard library alone (no numpy, no
Pillow): its facts, JSON requests with the API key, and its own search of shared folders. The
full client builds on it; `clipcls search --server` uses it without loading the rest."""

from __future__ import annotations

import http.client
import io
import json
import os
import platform
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any, BinaryIO, TypeGuard

from clipcls.errors import ClipclsError, UsageError
from clipcls.settings import model_id

API_KEY_HEADER = "X-API-Key"
KEY_ENV = "CLIPCLS_API_KEY"
LOAD_WAIT = 600.0  # seconds to wait for a loading server (a first run downloads its weights)
TIMEOUT = 600.0  # seconds for one answer (the server bounds its own time per request)
MAX_LOGIT_SCALE = 1000.0  # a model's exp(logit_scale): CLIP's is clamped to 100
MAX_LOGIT_BIAS = 1000.0  # SigLIP's learnt bias is about -10 to -17
MAX_ANSWER = 1024**3  # bytes: a texts answer of 4,096 vectors is ~80 MB of JSON
READ = 1024**2  # bytes read at once at most


def unreadable(url: str) -> ClipclsError:
    """The error for an answer that is not what clipcls asked the server for."""
    return ClipclsError(f"the server at {url} sent an answer clipcls cannot read")


def check_api_key(key: str, where: str) -> None:
    """Refuse a key no HTTP header can carry as is: non-ASCII (or control) characters, or
    spaces at its ends (which the server would strip and never match)."""
    if not key or key != key.strip() or not all(" " <= c <= "~" for c in key):
        raise UsageError(
            f"{where} must be printable ASCII without spaces at its ends, not {ascii(key)}"
        )


def server_url(url: str) -> str:
    """url without trailing slashes, if a request can go to it: http(s), a host, a port that
    is a number (0-65535), no spaces or control characters; else UsageError, which never
    echoes a password back."""
    given = url.rstrip("/")
    netloc = re.split(r"[/?#]", given.partition("://")[2], maxsplit=1)[0]  # as urlsplit's
    if "@" in netloc:
        raise UsageError("--server takes no user:password@; use $CLIPCLS_API_KEY for a key")
    try:
        parts = urllib.parse.urlsplit(given)
        parts.port  # noqa: B018 (ValueError: not a number, or out of range)
    except ValueError:
        parts = None
    formed = given.startswith(("http://", "https://")) and parts is not None and parts.hostname
    if not formed or not all(c.isprintable() and not c.isspace() for c in given):
        raise UsageError(f"--server must be an http(s):// URL, not {url!r}")
    return given


def base_url(url: str) -> str:
    """A server_url as it names one server, however it was written: scheme and host in lower
    case, the port written out (`http://Box/` and `http://box:80` are one server)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return parts._replace(scheme=parts.scheme.lower(), netloc=netloc).geturl()


def machine_id() -> str:
    """This machine, as a client compares it with its own to tell a shared file system."""
    for name in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(name, encoding="ascii") as stream:
                return stream.read().strip() + "@" + platform.node()
        except (OSError, ValueError):
            continue
    return platform.node()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error, not followed: urllib would send the API key to its target."""

    def redirect_request(self, *args: Any) -> None:
        return None


class _Late(TimeoutError):
    """An answer (status line, headers and body) that did not come within TIMEOUT seconds."""


class _Reading(io.RawIOBase):
    """An answer's socket, each read given what is left of TIMEOUT as its timeout: the
    socket's own timeout bounds each read only, and a server trickling a byte at a time,
    status line and headers included, would otherwise hold the command for ever."""

    def __init__(self, sock: socket.socket, given: BinaryIO) -> None:
        self.sock, self.given = sock, given  # given: http.client's reader, closed with this
        self.deadline = time.monotonic() + TIMEOUT

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Late()
        self.sock.settimeout(left)
        try:
            return self.sock.recv_into(buffer)
        except TimeoutError:
            raise _Late() from None

    def close(self) -> None:
        self.given.close()  # the socket's last reference: it closes with the answer
        super().close()


class _Answer(http.client.HTTPResponse):
    """http.client's answer, read through _Reading from its first byte."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = io.BufferedReader(_Reading(sock, self.fp))


class _Connection(http.client.HTTPConnection):
    response_class = _Answer


class _TLSConnection(http.client.HTTPSConnection):
    response_class = _Answer


class _Within(urllib.request.HTTPHandler):
    """urllib's http:, its answers read within TIMEOUT in all."""

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_Connection, req)


class _TLSWithin(urllib.request.HTTPSHandler):
    """urllib's https:, its answers read within TIMEOUT in all."""

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_TLSConnection, req, context=self._context)  # type: ignore[attr-defined]


_OPENER = urllib.request.build_opener(_NoRedirect, _Within, _TLSWithin)


class ServerConnection:
    """One server: its facts (model, limits, machine), asked once on opening, and requests."""

    def __init__(self, url: str, api_key: str | None = None, load_wait: float = LOAD_WAIT) -> None:
        self.url = server_url(url)
        self.api_key = api_key if api_key is not None else os.environ.get(KEY_ENV) or None
        if self.api_key is not None:
            check_api_key(self.api_key, f"${KEY_ENV}")
        self.facts: dict[str, Any] = self._wait_for_model(load_wait)

    def _wait_for_model(self, load_wait: float) -> dict[str, Any]:
        """The server's facts, waiting while it loads its model (it answers 503 until then)."""
        deadline = time.monotonic() + load_wait
        while True:
            try:
                facts = self._call("GET", "/v1/info")
            except ClipclsError as error:
                if " answered 503" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.25)
                continue
            if not _looks_like_clipcls(facts):
                raise ClipclsError(f"{self.url} does not look like a clipcls server")
            if not _sane_logits(facts):
                raise ClipclsError(
                    f"the server at {self.url} reports a logit scale or bias no model has"
                    f" (scale {facts['logit_scale']!r}, bias {facts.get('logit_bias')!r})"
                )
            return facts

    def _call(
        self, method: str, path: str, data: bytes | None = None, kind: str = "application/json"
    ) -> Any:
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", kind)
        if self.api_key:
            request.add_header(API_KEY_HEADER, self.api_key)
        try:
            with _OPENER.open(request, timeout=TIMEOUT) as answer:
                body = _bounded(answer, self.url)
        except _Late:
            why = f"took over {TIMEOUT:g} s to send its answer"
            raise ClipclsError(f"the server at {self.url} {why}") from None
        except urllib.error.HTTPError as error:
            if error.code == 401:
                why = f"it wants an API key: set ${KEY_ENV}"
                raise UsageError(f"the server at {self.url} refused the request: {why}") from None
            raise ClipclsError(
                f"the server at {self.url} answered {error.code}: {_why(error, self.url)}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            raise ClipclsError(f"cannot reach the clipcls server at {self.url}: {reason}") from None
        except http.client.HTTPException as error:  # a body cut short, no status line, ...
            broken = type(error).__name__
            raise ClipclsError(
                f"the server at {self.url} sent a broken answer ({broken})"
            ) from None
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # HTML, bytes not UTF-8, [[[[... too deep
            raise unreadable(self.url) from None

    @property
    def model(self) -> tuple[str, str | None]:
        return str(self.facts["model"]), self.facts.get("pretrained")

    @property
    def weights(self) -> str | None:
        """The identity of the server's weights (the digest of their bytes, for files)."""
        found = self.facts.get("weights")
        return found if isinstance(found, str) else None

    def describe(self) -> str:
        """What a run says of its server: `model M on the server at URL (cpu, fp32)`."""
        where = f"({self.facts.get('device')}, {self.facts.get('precision')})"
        return f"model {model_id(*self.model)} on the server at {self.url} {where}"

    def post(self, body: dict[str, Any]) -> Any:
        """One JSON request to the predict endpoint, its decoded answer."""
        return self._call("POST", "/v1/predict", json.dumps(body).encode())

    def search_folders(self, folders: Sequence[str], text: str, k: int) -> dict[str, Any] | None:
        """The server's own search of folders (absolute) for text: {"search": hits, "failures"};
        None where it cannot answer: another machine, or a refusal (4xx: a folder outside its
        --allow-dir roots, or a server without search), and the caller searches instead."""
        if self.facts.get("machine") != machine_id() or not self.facts.get("allow_dirs"):
            return None
        try:
            answer = self.post({"search": {"folders": list(folders), "text": text, "k": k}})
        except ClipclsError as error:
            if re.search(r" answered 4\d\d:", str(error)):
                return None
            raise
        if not isinstance(answer, dict) or not isinstance(answer.get("search"), list):
            raise unreadable(self.url)
        return answer


def _looks_like_clipcls(facts: Any) -> TypeGuard[dict[str, Any]]:
    """Whether facts name a model and hold the logit scale (and bias, or null) that a client
    scores with: a stranger is refused on opening, in one line, not by a KeyError later."""
    if not isinstance(facts, dict) or not isinstance(facts.get("model"), str):
        return False
    bias = facts.get("logit_bias")
    numbers = [facts.get("logit_scale")] + ([] if bias is None else [bias])
    return all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers)


def _sane_logits(facts: dict[str, Any]) -> bool:
    """Whether the reported scale and bias could be a model's: a CLIP scale is clamped to 100
    and SigLIP's learn ~110-120 (bias ~-10 to -17), so 0 < scale <= MAX_LOGIT_SCALE, |bias| <=
    MAX_LOGIT_BIAS; beyond those every probability is 0, 1 or NaN, whatever the images show."""
    try:
        scale, bias = float(facts["logit_scale"]), float(facts.get("logit_bias") or 0.0)
    except OverflowError:  # a JSON integer beyond any float
        return False
    return 0.0 < scale <= MAX_LOGIT_SCALE and abs(bias) <= MAX_LOGIT_BIAS


def _bounded(answer: http.client.HTTPResponse, url: str) -> bytes:
    """The answer's body, read as it comes, within MAX_ANSWER bytes (and, read through
    _Reading, within TIMEOUT seconds of the request's being sent, headers included)."""
    parts, size = [], 0
    while part := answer.read1(READ):
        parts.append(part)
        size += len(part)
        if size > MAX_ANSWER:
            raise ClipclsError(f"the server at {url} sent an answer of over {MAX_ANSWER:,} bytes")
    if answer.length:  # read1 ends quietly where the connection closed short of the length
        raise http.client.IncompleteRead(b"".join(parts), answer.length)
    return b"".join(parts)


def _why(error: urllib.error.HTTPError, url: str) -> str:
    """The reason an error answer gives, read within the same bounds as any answer (one that
    is too long, too slow, cut short or not JSON: its status line's reason)."""
    if not isinstance(error.fp, http.client.HTTPResponse):
        return str(error.reason)
    try:
        detail = json.loads(_bounded(error.fp, url))
        return str(detail.get("error") or detail.get("detail") or detail)
    except (ValueError, RecursionError, AttributeError, OSError):  # not JSON, not an object
        return str(error.reason)
    except (ClipclsError, http.client.HTTPException):  # too long, too slow, cut short
        return str(error.reason)
