"""While the model loads: LitServe starts answering only once its worker is set up, so until
then a stand-in on the server's socket answers every request 503 with a JSON error (401 without
the API key), and /healthz and /v1/info say "not ready" instead of leaving clients hanging."""

from __future__ import annotations

import hmac
import http.server
import json
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

from clipcls.client.wire import API_KEY_HEADER

LOADING = {"error": "the model is still loading"}  # 503, from /v1/info and /healthz
LOOK = 0.1  # seconds between looks at whether the model is up
HEAD_SECONDS = 2.0  # for a request head: one slow client holds the stand-in no longer


class _Loading(http.server.BaseHTTPRequestHandler):
    """One request, answered 503 (or 401): the stand-in reads no body and keeps no connection."""

    api_key: str | None = None
    timeout = HEAD_SECONDS

    def answer(self) -> None:
        shown = self.headers.get(API_KEY_HEADER, "")
        if self.api_key and not hmac.compare_digest(shown.encode(), self.api_key.encode()):
            self._reply(401, {"error": f"missing or wrong {API_KEY_HEADER} header"})
        else:
            self._reply(503, LOADING)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = answer  # noqa: N815

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- the base's name
        return None


def answer_while_loading(
    sock: socket.socket, ready: Callable[[], bool], api_key: str | None
) -> threading.Thread:
    """Answer on sock (listening, not yet served) until ready() is true; then leave it to
    LitServe, which starts serving on it only after that (new connections wait meanwhile)."""
    handler = type("Handler", (_Loading,), {"api_key": api_key})
    listener = sock.dup()
    listener.setblocking(False)  # a connection another process took must not block this one

    def run() -> None:
        with listener:
            while not ready():
                if not select.select([listener], [], [], LOOK)[0] or ready():
                    continue
                try:
                    connection, address = listener.accept()
                except OSError:
                    continue
                with connection:
                    connection.settimeout(HEAD_SECONDS)
                    try:
                        handler(connection, address, None)
                    except OSError:
                        continue

    thread = threading.Thread(target=run, name="clipcls-loading", daemon=True)
    thread.start()
    return thread
