"""`clipcls serve` when one request (or one client) misbehaves: a malformed request is its own
4xx and its batch-mates are answered, the embedding cache stays on, prompts and request bodies
are bounded in work, time and memory, a bad API key stops the start, two servers never share a
port, a dead model worker stops the server with exit 1, and SIGTERM stops it with a request
in flight (not after LitServe's 30 s wait).
Each test sends a bounded number of requests to a server on 127.0.0.1."""

import base64
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_IMAGES, unit
from test_serve import Server, free_port
from typer.testing import CliRunner

from clipcls.cache import EmbeddingCache
from clipcls.cli import app
from clipcls.errors import UsageError

pytestmark = pytest.mark.slow  # starts clipcls servers: run by .ci/run with -m slow

pytest.importorskip("litserve")
runner = CliRunner()
TIMEOUT = 3.0  # the shared server's --timeout, seconds
MAX_TEXTS = 20000
LONG = " seen from far away in the rain" * 6  # ~45 tokens: slow work for the text tower
IMAGE = base64.b64encode((SAMPLE_IMAGES / "chelsea.png").read_bytes()).decode()
GOOD = {"images": [{"data": IMAGE, "name": "c.png"}], "labels": ["cat", "dog"]}
MALFORMED = {  # each a 400 for its own request only
    "a space in a URL": {"images": [{"url": "http://exa mple.test/x.png"}], "labels": ["a", "b"]},
    "a control character": {"images": [{"url": "http://127.0.0.1/\u0001.png"}], "labels": ["a"]},
    "a bad port": {"images": [{"url": "http://127.0.0.1:99999/x.png"}], "labels": ["a", "b"]},
    "a broken IPv6 host": {"images": [{"url": "http://[::1/x"}], "labels": ["a", "b"]},
    "a lone surrogate name": {"images": [{"data": IMAGE, "name": "\ud800"}], "labels": ["a"]},
    "a lone surrogate label": {**GOOD, "labels": ["c\ud800t", "dog"]},
    "an escaped-byte label": {**GOOD, "labels": ["caf\udce9", "dog"]},
    "a lone surrogate template": {**GOOD, "templates": ["a \udfff {}"]},
    "a NUL in a path": {"images": [{"path": "/tmp/a\u0000b.png"}], "labels": ["a", "b"]},
    "a lone surrogate text": {"texts": ["\ud800"]},
}


@pytest.fixture(scope="module")
def server(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    cache = tmp_path_factory.mktemp("server-cache")
    running = Server(
        tiny_model,
        "--cache-dir",
        str(cache),
        "--timeout",
        str(TIMEOUT),
        "--max-texts",
        str(MAX_TEXTS),
        "--max-body-mb",
        "8",
    )
    running.cache = cache  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.stop()


def post(server: Server, body: dict) -> tuple[int, dict]:  # type: ignore[type-arg]
    # ensure_ascii: lone surrogates travel as \\ud800 escapes, as a hostile client sends them
    return server.call("POST", "/v1/predict", json.dumps(body).encode())


def cached_texts(folder: Path) -> int:
    with sqlite3.connect(folder / "embeddings.sqlite3") as db:
        return int(db.execute("SELECT COUNT(*) FROM texts").fetchone()[0])


def test_a_malformed_request_is_its_own_400_and_its_batch_mates_are_answered(
    server: Server,
) -> None:
    want = post(server, GOOD)
    assert want[0] == 200
    for what, bad in MALFORMED.items():
        with ThreadPoolExecutor(4) as pool:  # sent together, so LitServe batches them
            goods = [pool.submit(post, server, GOOD) for _ in range(3)]
            status, answer = pool.submit(post, server, bad).result()
            assert status == 400, (what, answer)
            for done in goods:
                assert done.result() == want, what
    before = cached_texts(server.cache)  # type: ignore[attr-defined]
    assert post(server, {**GOOD, "labels": ["zebra", "okapi"], "templates": ["a {}"]})[0] == 200
    assert cached_texts(server.cache) == before + 2  # type: ignore[attr-defined]  # still on


def test_a_request_over_the_prompt_limit_is_refused_at_once(server: Server) -> None:
    # Each is refused before any prompt is encoded: encoding them would answer 200 minutes later.
    assert post(server, {"texts": [f"t{i}" for i in range(200_000)]})[0] in (400, 413)
    status, answer = post(server, {"texts": [f"t{i}" for i in range(MAX_TEXTS + 1)]})
    assert status == 413 and f"the limit is {MAX_TEXTS}" in answer["error"]
    labels = [f"label {i}" for i in range(260)]  # x 80 templates: 20,800 prompts
    status, answer = post(server, {**GOOD, "labels": labels})
    assert status == 413 and "20800 prompts" in answer["error"]


def test_bodies_that_would_balloon_in_memory_are_refused(server: Server) -> None:
    """Within the body limit, but a million Python objects, or 100 KB labels x 80 templates."""
    arrays = b'{"images": [' + b"[]," * 1_000_000 + b"[]]}"  # 3 MB
    status, answer = server.call("POST", "/v1/predict", arrays)
    assert status == 400 and "JSON values" in answer["error"]
    status, answer = post(server, {**GOOD, "labels": ["x" * 100_000, "dog"]})
    assert status == 413 and "100000 characters" in answer["error"]
    assert post(server, GOOD)[0] == 200


def test_a_request_cut_off_by_the_timeout_stops_holding_the_worker(server: Server) -> None:
    """20,000 long prompts take the tiny model over 10 s here; the worker gives up at
    --timeout."""
    texts = {"texts": [f"a photo of thing number {i}{LONG}" for i in range(MAX_TEXTS)]}
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(post, server, texts)
        time.sleep(0.5)
        assert slow.result()[0] == 504
    # Were the worker still embedding the 20,000 prompts, this request would wait past
    # --timeout in the queue and be answered 504 by the server's guard.
    assert post(server, GOOD)[0] == 200


def raw_request(port: int, length: int, sent: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    sock.sendall(f"{head}Content-Length: {length}\r\n\r\n".encode() + sent)
    return sock


def status_of(sock: socket.socket) -> int:
    line = sock.recv(4096).split(b"\r\n", 1)[0]
    return int(line.split()[1]) if line else 0


def rss_kib(pid: int) -> int:
    total = 0
    for child in [pid, *children(pid)]:
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]


def test_half_sent_bodies_are_bounded_in_memory_and_time(server: Server) -> None:
    """--max-body-mb 8: the server holds 32 MB of bodies at most; past that, 503 at once; a
    body not sent within --timeout is a 408."""
    before = rss_kib(server.process.pid)
    half = b"x" * 4_000_000
    held = [raw_request(server.port, 8_000_000, half) for _ in range(4)]
    time.sleep(0.5)
    refused = [raw_request(server.port, 8_000_000, half) for _ in range(4)]
    assert [status_of(sock) for sock in refused] == [503] * 4  # not 408: answered unread
    grown = rss_kib(server.process.pid) - before
    assert [status_of(sock) for sock in held] == [408] * 4  # dropped by --timeout, 3 s
    assert grown < 64 * 1024, f"{grown} KiB more"
    for sock in held + refused:
        sock.close()
    assert post(server, GOOD)[0] == 200  # the budget is given back


def test_connections_that_never_finish_a_request_head_are_closed(server: Server) -> None:
    """Slowloris headers and idle keep-alive connections: closed within --timeout."""
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(3)]
    slow = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(3)]
    for sock in slow:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")
    assert post(server, GOOD)[0] == 200
    time.sleep(1)
    for sock in slow:
        sock.sendall(b"X-Slow: 1\r\n")  # a trickle does not reset the deadline
    # Closed by the server (--timeout 3 s); left open, each recv would time out after 30 s.
    assert [sock.recv(10) for sock in idle + slow] == [b""] * 6
    for sock in idle + slow:
        sock.close()


def test_sigterm_stops_the_server_with_a_request_in_flight(server: Server) -> None:
    idle = socket.create_connection(("127.0.0.1", server.port))  # a keep-alive held open
    texts = {"texts": [f"a photo of thing number {i}{LONG}" for i in range(MAX_TEXTS)]}
    pool = ThreadPoolExecutor(1)
    pool.submit(post, server, texts)
    time.sleep(0.5)
    # stop() waits 30 s at most (LitServe's own wait was 30 s); how fast: benchmarks/serve.py.
    assert server.stop() == 0
    idle.close()
    pool.shutdown(wait=True)


@pytest.mark.parametrize("key", [" padded", "cl\u00e9", "two\r\nlines"])
def test_an_api_key_no_header_can_carry_is_refused_at_start(key: str) -> None:
    with socket.socket() as taken:  # were the key let through, the port would be the error
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = runner.invoke(app, ["serve", "--port", port], env={"CLIPCLS_API_KEY": key})
        assert done.exit_code == 2 and "printable ASCII" in done.stderr, done.stderr
        done = runner.invoke(app, ["serve", "--port", port, "--api-key", key])
        assert done.exit_code == 2 and "--api-key" in done.stderr, done.stderr


def test_the_client_refuses_such_a_key_before_it_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    from clipcls.client.predict import ServerClient

    monkeypatch.setenv("CLIPCLS_API_KEY", "cl\u00e9")
    with pytest.raises(UsageError, match=r"\$CLIPCLS_API_KEY must be printable ASCII"):
        ServerClient(f"http://127.0.0.1:{free_port()}")


def test_a_bad_text_key_leaves_the_cache_on(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    vector = unit(np.arange(1, 5, dtype=np.float32))
    cache.put_texts("m", [("c\ud800t", vector), ("dog", vector)])
    assert cache.failure is None
    assert set(cache.get_texts("m", ["c\ud800t", "dog"])) == {"c\ud800t", "dog"}


def test_one_failing_request_in_a_batch_is_its_own_error(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker itself, past the guard: one request's exception is its own answer."""
    from clipcls.client.protocol import ImageRef, Limits, ServeRequest, TextsRequest, parse_request
    from clipcls.server import worker
    from clipcls.settings import ModelSettings

    monkeypatch.setattr(worker, "die_with_parent", lambda parent: None)
    api = worker.ClipclsAPI(ModelSettings(model=tiny_model), Limits(), [], tmp_path / "m.json")
    api.setup("cpu")
    labels = ServeRequest((ImageRef("c.png", data=base64.b64decode(IMAGE)),))  # no labels
    good = api.decode_request(
        parse_request(GOOD, Limits(), []).to_record()
    )  # as the guard hands it
    nul = ServeRequest((ImageRef("x", path="/tmp/a\x00b.png"),), good.spec)
    texts = TextsRequest(("c\ud800t",))
    answers = api.predict([good, nul, texts, labels])
    assert answers[0]["predictions"][0]["predictions"][0]["label"] in ("cat", "dog")
    assert "error" in answers[1]["predictions"][0]
    assert len(answers[2]["embeddings"]) == 1
    assert answers[3]["status"] == 500  # no labels: scoring fails, for this request alone
    assert api.cache.failure is None


def serve_process(model: str, port: int) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "clipcls", "serve", "--model", model, "--port", str(port)]
    return subprocess.Popen(command, stderr=subprocess.PIPE, text=True)


def test_two_servers_started_at_once_on_one_port_one_serves(tiny_model: str) -> None:
    port = free_port()
    first, second = serve_process(tiny_model, port), serve_process(tiny_model, port)
    try:
        deadline = time.monotonic() + 120
        while first.poll() is None and second.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        loser, winner = (first, second) if first.poll() is not None else (second, first)
        assert loser.wait(timeout=10) == 2
        said = loser.stderr.read()  # type: ignore[union-attr]
        assert f"port {port}" in said and "ready:" not in said
        time.sleep(1)
        assert winner.poll() is None
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)


def test_a_dead_model_worker_fails_the_requests_in_flight_and_exits_1(tiny_model: str) -> None:
    running = Server(tiny_model)
    workers = [
        pid
        for pid in children(running.process.pid)
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(workers) == 1
    texts = {"texts": [f"a photo of thing number {i}{LONG}" for i in range(4000)]}
    answered: list[object] = []
    client = threading.Thread(target=lambda: answered.append(_try(post, running, texts)))
    client.start()
    time.sleep(0.5)
    os.kill(workers[0], signal.SIGKILL)
    client.join(timeout=60)
    # An answer or a closed connection, never the client's own 30 s timeout.
    assert answered and answered[0] != 200 and not isinstance(answered[0], TimeoutError)
    assert running.process.wait(timeout=30) == 1
    assert "model worker died" in running.process.stderr.read()  # type: ignore[union-attr]


def _try(call, *args):  # type: ignore[no-untyped-def]
    try:
        return call(*args)[0]
    except OSError as error:  # the server went away: what a client sees
        return error
