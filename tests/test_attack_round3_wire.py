"""Round three of attacks, the server connection's part: an error answer whose body never
ends, an answer nested deeper than json parses, headers sent a byte at a time."""

from __future__ import annotations

import contextlib
import http.server
import json
import queue
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from clipcls.client import wire
from clipcls.errors import ClipclsError


class _EndlessError(http.server.BaseHTTPRequestHandler):
    """A clipcls server's facts; then a 500 whose body comes a byte at a time, for ever."""

    sent: queue.Queue[int] = queue.Queue()  # bytes of each error body sent before the client went

    def do_GET(self) -> None:
        self._send(200, json.dumps({"model": "m", "logit_scale": 100.0}).encode())

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(10**9))
        self.end_headers()
        sent = 0
        try:
            for _ in range(1200):
                self.wfile.write(b" ")
                self.wfile.flush()
                sent += 1
                time.sleep(0.05)
        except OSError:
            pass  # the client gave up
        finally:
            _EndlessError.sent.put(sent)

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def endless_error() -> Iterator[str]:
    yield from _serving(_EndlessError)


def test_an_error_answer_is_read_within_the_bound_too(
    endless_error: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a 2xx body went through the bound: the body of an error was read whole for its
    # reason, so a server trickling one held the command for as long as it liked.
    connection = wire.ServerConnection(endless_error)
    monkeypatch.setattr(wire, "TIMEOUT", 0.5)
    monkeypatch.setattr(_EndlessError, "sent", queue.Queue())
    with pytest.raises(ClipclsError, match="answered 500"):
        connection.post({"texts": ["a"]})
    # The server sees the client go: read whole, the trickle would run its 1,200 bytes (60 s).
    assert _EndlessError.sent.get() < 1200


class _DeepAnswer(_EndlessError):
    """A server whose answers (and error answers) are JSON nested deeper than Python parses."""

    deep = b"[" * 100_000 + b"]" * 100_000

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send(500 if "error" in self.path else 200, self.deep)


@pytest.fixture
def deep_answer() -> Iterator[str]:
    yield from _serving(_DeepAnswer)


def test_an_answer_nested_too_deep_is_one_that_cannot_be_read(deep_answer: str) -> None:
    # 200 KB of brackets is valid JSON that json.loads gives up on with a RecursionError,
    # which escaped as a traceback where any other unreadable answer is one line.
    connection = wire.ServerConnection(deep_answer)
    with pytest.raises(ClipclsError, match="cannot read"):
        connection.post({"texts": ["a"]})
    connection.url += "/error"  # the same answer, as the body of a 500
    with pytest.raises(ClipclsError, match="answered 500"):
        connection.post({"texts": ["a"]})


def test_an_answer_whose_headers_trickle_is_bounded_in_all(monkeypatch: pytest.MonkeyPatch) -> None:
    # The bound held from the body on: a status line and headers sent a byte at a time, each
    # within the socket's timeout, held the command for as long as the server liked.
    listener = socket.create_server(("127.0.0.1", 0))

    def trickle() -> None:
        client, _ = listener.accept()
        with client:
            client.recv(65536)
            with contextlib.suppress(OSError):  # the client hung up: done
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
                    client.sendall(bytes([byte]))
                    time.sleep(0.05)

    threading.Thread(target=trickle, daemon=True).start()
    monkeypatch.setattr(wire, "TIMEOUT", 0.5)
    # Without the bound the headers arrive whole after 50 s: another error, or none.
    with pytest.raises(ClipclsError, match="took over 0.5 s to send its answer"):
        wire.ServerConnection(f"http://127.0.0.1:{listener.getsockname()[1]}")
    listener.close()
