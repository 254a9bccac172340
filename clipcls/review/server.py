"""The review page's HTTP server (stdlib, a thread per connection): the token on every request,
the Host header checked against the bound address, files only by row index, bounded bodies."""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import secrets
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from clipcls.errors import ClipclsError, UsageError
from clipcls.review.api import ReviewApi
from clipcls.review.thumbs import Thumb

MIN_KEY = 16
MAX_BODY = 64 << 10  # a decision is a few dozen bytes
READ_TIMEOUT = 10.0  # seconds a connection may take to send its request, or sit idle
SECURITY = {
    "Content-Security-Policy": (
        "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token is in the address
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}
ASSETS = {"/page.js": "text/javascript", "/actions.js": "text/javascript", "/page.css": "text/css"}
POSTS = ("/api/decide", "/api/undo", "/api/label", "/api/finish")
BY_INDEX = re.compile(r"/(thumb|image)/(0|[1-9][0-9]{0,8})")
HOST_HEADER = re.compile(r"[a-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9a-f:.]+\](:[0-9]{1,5})?")
TOKEN_SLOT = "{{TOKEN}}"
KEY_CHARACTERS = re.compile(r"[A-Za-z0-9_.~-]+")  # an address carries these unescaped


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, key: str | None) -> None:
    """Refuse listening off loopback without a key long enough to guess at no rate."""
    if key is not None and len(key) < MIN_KEY:
        raise UsageError(f"--api-key must be at least {MIN_KEY} characters")
    if key is not None and not KEY_CHARACTERS.fullmatch(key):
        # It goes into the printed address and the page as it is: nothing there to escape.
        raise UsageError(
            "--api-key may hold letters, digits and - _ . ~ only (openssl rand -hex 16)"
        )
    if not is_loopback(host) and key is None:
        raise UsageError(f"--host {host} is not loopback: give --api-key too (the page's token)")


def new_token() -> str:
    return secrets.token_urlsafe(24)


class ReviewServer(ThreadingHTTPServer):
    """Serves one ReviewApi; requests must carry token and name this server in Host."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # a burst (a page of thumbnails) waits, not for SYN retries

    def __init__(
        self, api: ReviewApi, host: str, port: int, token: str, timeout: float = READ_TIMEOUT
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        super().__init__((host.strip("[]"), port), ReviewHandler)
        self.api, self.token, self.read_timeout = api, token, timeout
        self.port = self.server_address[1]
        bound = str(self.server_address[0])
        names = {host.strip("[]").lower(), bound}
        if is_loopback(host):
            names |= {"localhost", "127.0.0.1"}
        # On every address the page is reached by this machine's name or any of its addresses.
        self.everywhere = ipaddress.ip_address(bound).is_unspecified
        if self.everywhere:
            names |= {socket.gethostname().lower(), "localhost"}
        self.names = names
        self.page = _asset("page.html").replace(TOKEN_SLOT, token).encode("utf-8")

    def serves(self, header: str) -> bool:
        """Whether a Host header names this server: one of its names and its port; listening
        everywhere, any IP address too (a DNS name can be rebound to this machine, not an IP)."""
        header = header.lower()
        if not HOST_HEADER.fullmatch(header):
            return False
        parts = urlsplit(f"//{header}")
        try:
            if (parts.port or 80) != self.port:  # no port: the browser left out :80
                return False
        except ValueError:  # a port past 65535
            return False
        name = parts.hostname or ""
        return name in self.names or (self.everywhere and _is_address(name))

    @property
    def url(self) -> str:
        host = str(self.server_address[0])
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}/?token={self.token}"


class ReviewHandler(BaseHTTPRequestHandler):
    """One connection's requests: checked, routed to the api, answered with JSON or bytes."""

    server: ReviewServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # A request sent slowly, half sent or not at all ties up its own thread only this long.
        self.connection.settimeout(self.server.read_timeout)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: stderr carries the command's own progress."""

    def do_GET(self) -> None:
        self.handle_request("GET")

    def do_POST(self) -> None:
        self.handle_request("POST")

    def do_PUT(self) -> None:
        self.handle_request("PUT")

    def do_DELETE(self) -> None:
        self.handle_request("DELETE")

    def handle_request(self, method: str) -> None:
        """Check, route, answer; any failure fails this request alone."""
        try:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            named = self.server.serves(self.headers.get("Host") or "")
            if method == "GET" and parts.path == "/favicon.ico" and named and not self.has_body():
                # The browser asks for it on its own, without the token: an empty answer,
                # which tells nothing, rather than a 403 in its console.
                self.send_bytes(b"", "image/x-icon", "max-age=86400", status=HTTPStatus.NO_CONTENT)
                return
            allowed = self.allowed(query) and (method != "POST" or self.same_origin())
            if not (allowed and method == "POST" and parts.path in POSTS) and self.has_body():
                self.close_connection = True  # unread, it would be taken for the next request
            if not allowed:
                self.send_json(HTTPStatus.FORBIDDEN, {"error": "forbidden"})
            elif method == "POST":
                self.post(parts.path)
            elif method == "GET":
                self.get(parts.path, query)
            else:
                self.send_json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "method not allowed"})
        except ClipclsError as error:
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as error:  # a bug answers 500 here, the server goes on
            self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": type(error).__name__})

    def has_body(self) -> bool:
        length = self.headers.get("Content-Length", "0").strip()
        return length != "0" or "Transfer-Encoding" in self.headers

    def allowed(self, query: dict[str, str]) -> bool:
        """The Host header names this server (no DNS rebinding) and the token matches."""
        given = query.get("token") or self.headers.get("X-Review-Token") or ""
        token_ok = hmac.compare_digest(given.encode(), self.server.token.encode())
        return self.server.serves(self.headers.get("Host") or "") and token_ok

    def same_origin(self) -> bool:
        """A POST from a page carries Origin: it must be this page's own (a tool sends none)."""
        origin = self.headers.get("Origin")
        return origin is None or origin.lower() == f"http://{self.headers.get('Host', '').lower()}"

    def get(self, path: str, query: dict[str, str]) -> None:
        api = self.server.api
        if path == "/":
            self.send_bytes(self.server.page, "text/html; charset=utf-8")
        elif path in ASSETS:
            data = _asset(path.lstrip("/")).encode("utf-8")
            self.send_bytes(data, f"{ASSETS[path]}; charset=utf-8")
        elif path == "/api/state":
            self.send_json(HTTPStatus.OK, api.state())
        elif path == "/api/rows":
            self.send_json(HTTPStatus.OK, api.rows(query))
        elif (match := BY_INDEX.fullmatch(path)) and int(match[2]) < len(api.table.rows):
            index = int(match[2])
            if match[1] == "thumb":
                self.send_picture(api.thumb(index), "private, max-age=300")
            else:
                self.send_picture(api.image(index), "no-store")
        else:
            self.send_json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def post(self, path: str) -> None:
        api = self.server.api
        if path not in POSTS:
            self.send_json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        body = self.read_body()
        if body is None:
            return
        answer = {
            "/api/decide": api.decide,
            "/api/undo": api.undo,
            "/api/label": api.add_label,
            "/api/finish": api.finish,
        }[path]
        self.send_json(HTTPStatus.OK, answer(body))

    def read_body(self) -> dict[str, Any] | None:
        """The JSON object sent, at most MAX_BODY bytes (None once refused: answered already)."""
        length = self.headers.get("Content-Length")
        # Chunked (alone or beside a length, which HTTP says it overrides) is never the page's:
        # read by the length, the rest would be taken for the next request.
        if length is None or not length.isdigit() or "Transfer-Encoding" in self.headers:
            self.close_connection = True
            self.send_json(
                HTTPStatus.LENGTH_REQUIRED,
                {"error": "Content-Length required, no Transfer-Encoding"},
            )
            return None
        if int(length) > MAX_BODY:
            self.close_connection = True  # the rest is never read
            self.send_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
            return None
        try:
            body = json.loads(self.rfile.read(int(length)) or b"{}")
        except (ValueError, RecursionError):  # RecursionError: nested thousands deep
            raise UsageError("the body is not JSON") from None
        if not isinstance(body, dict):
            raise UsageError("the body must be a JSON object")
        return body

    def send_picture(self, picture: tuple[bytes, str] | Thumb, cache: str) -> None:
        if isinstance(picture, Thumb):
            extra = {"X-Review-Problem": picture.problem} if picture.problem else {}
            self.send_bytes(picture.data, "image/jpeg", cache, extra)
        else:
            self.send_bytes(picture[0], picture[1], cache)

    def send_json(self, status: HTTPStatus, payload: Any) -> None:
        text = json.dumps(payload, ensure_ascii=True)
        # Markup characters escaped too: the answer holds no tag even read as HTML.
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        data = text.encode("ascii")
        self.send_bytes(data, "application/json", status=status)

    def send_bytes(
        self,
        data: bytes,
        kind: str,
        cache: str = "no-store",
        extra: dict[str, str] | None = None,
        status: HTTPStatus = HTTPStatus.OK,
    ) -> None:
        self.send_response(status)
        for name, value in {**SECURITY, **(extra or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", cache)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _asset(name: str) -> str:
    return resources.files("clipcls.review").joinpath(name).read_text(encoding="utf-8")
