"""The review server at the HTTP level: the token and Host on every route, files only by row
index, special files and bombs as placeholders, slow or huge bodies failing alone."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from review_helpers import TOKEN, XSS, Running, label_output, running
from typer.testing import CliRunner

from clipcls import images
from clipcls.cli import app
from clipcls.errors import UsageError
from clipcls.review import thumbs as thumbs_module
from clipcls.review.server import check_host
from clipcls.review.thumbs import Thumbs

ROUTES = [
    ("GET", "/"),
    ("GET", "/page.js"),
    ("GET", "/actions.js"),
    ("GET", "/page.css"),
    ("GET", "/api/state"),
    ("GET", "/api/rows"),
    ("GET", "/thumb/0"),
    ("GET", "/image/0"),
    ("POST", "/api/decide"),
    ("POST", "/api/undo"),
    ("POST", "/api/label"),
    ("POST", "/api/finish"),
    ("GET", "/no/such/route"),
]


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory, tiny_model: str) -> Path:
    root = tmp_path_factory.mktemp("review")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPCLS_CACHE_DIR", str(root / "cache"))
        return label_output(root, tiny_model)


@pytest.fixture
def served(output: Path, tmp_path: Path) -> Iterator[Running]:
    (output.parent / "out.csv.review.jsonl").unlink(missing_ok=True)  # each test starts fresh
    with running(output, tmp_path / "thumbs") as server:
        yield server


@pytest.mark.parametrize("method,path", ROUTES)
def test_every_route_needs_the_token(served: Running, method: str, path: str) -> None:
    body = {} if method == "POST" else None
    assert served.request(method, path, body, token=None)[0] == 403
    assert served.request(method, path, body, token="wrong")[0] == 403
    assert served.request(method, path, body, token=TOKEN[:-1])[0] == 403
    header = {"X-Review-Token": "wrong"}
    assert served.request(method, path, body, token=None, headers=header)[0] == 403
    status = served.request(method, path, body, token=None, headers={"X-Review-Token": TOKEN})[0]
    assert status != 403


def test_the_host_header_must_name_this_server(served: Running) -> None:
    port = served.server.port
    for host in (f"evil.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}", ""):
        assert served.request("GET", "/api/state", headers={"Host": host})[0] == 403, host
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert served.request("GET", "/api/state", headers={"Host": host})[0] == 200, host


def test_off_loopback_needs_a_key_of_16_characters(output: Path) -> None:
    for host, key in (("0.0.0.0", None), ("192.168.1.5", None), ("::", None), ("::1", "short")):
        with pytest.raises(UsageError):
            check_host(host, key)
    check_host("0.0.0.0", "k" * 16)
    check_host("localhost", None)
    done = CliRunner().invoke(app, ["review", str(output), "--host", "0.0.0.0"])
    assert done.exit_code == 2
    assert "--api-key" in done.output


@pytest.mark.parametrize(
    "path",
    [
        "/thumb/../../etc/passwd",
        "/thumb/%2e%2e/%2e%2e/etc/passwd",
        "/image//etc/passwd",
        "/image/-1",
        "/image/99999",
        "/image/01",
        "/image/1.0",
        "/thumb/0/../1",
        "/etc/passwd",
        "/page.html",
    ],
)
def test_no_path_parameter_reaches_the_disk(served: Running, path: str) -> None:
    status, headers, body = served.request("GET", path)
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert b"root:" not in body


def test_a_file_named_like_html_is_json_text(served: Running) -> None:
    status, headers, body = served.request("GET", "/api/rows?limit=500")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert b"<img" not in body  # escaped as \u003c in the JSON text
    names = [os.path.basename(row["path"]) for row in json.loads(body)["rows"]]
    assert XSS in names
    page = served.request("GET", "/")[2].decode()
    assert "<script>" not in page and "onerror" not in page  # the page holds no inline script


def test_special_files_bombs_and_gone_files_give_placeholders(served: Running) -> None:
    listed = served.json("GET", "/api/rows?limit=500")["rows"]
    rows = {os.path.basename(row["path"]): row for row in listed}
    assert rows["gone.jpg"]["missing"] is True
    assert rows["chelsea.png"]["missing"] is False
    for name, problem in (
        ("fifo.jpg", "unreadable"),
        ("zero.jpg", "unreadable"),
        ("bomb.png", "unreadable"),
        ("gone.jpg", "missing"),
    ):
        for route in ("thumb", "image"):
            # Opened without blocking: a FIFO read would wait for a writer for ever.
            status, headers, body = served.request("GET", f"/{route}/{rows[name]['index']}")
            assert status == 200 and headers["Content-Type"] == "image/jpeg"
            assert headers["X-Review-Problem"] == problem, (name, route)
            Image.open(io.BytesIO(body)).verify()


def test_thumbnails_are_small_cached_and_follow_edits(served: Running, output: Path) -> None:
    index = served.index_of("chelsea.png")
    status, headers, first = served.request("GET", f"/thumb/{index}")
    assert status == 200 and "X-Review-Problem" not in headers
    image = Image.open(io.BytesIO(first))
    assert image.format == "JPEG" and max(image.size) <= 256
    thumbs = served.server.api.thumbs
    assert len(list(thumbs.folder.rglob("*.jpg"))) == 1
    assert served.request("GET", f"/thumb/{index}")[2] == first  # from the cache
    photo = output.parent / "photos" / "chelsea.png"
    original = photo.read_bytes()
    try:
        Image.new("RGB", (300, 200), (255, 0, 0)).save(photo)
        edited = served.request("GET", f"/thumb/{index}")[2]
        assert edited != first
        assert Image.open(io.BytesIO(edited)).size == (256, 171)
    finally:
        photo.write_bytes(original)


def test_a_large_jpeg_is_thumbnailed_in_draft_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (10, 120, 200)).save(big, quality=90)
    decoded: list[tuple[int, int]] = []

    def load_image(*args: Any, **kwargs: Any) -> Image.Image:
        image = images.load_image(*args, **kwargs)
        decoded.append(image.size)
        return image

    monkeypatch.setattr(thumbs_module, "load_image", load_image)
    thumb = Thumbs(tmp_path / "thumbs").get(str(big))
    assert thumb.problem is None
    assert Image.open(io.BytesIO(thumb.data)).size == (256, 192)
    # libjpeg decoded it at 1/8 scale, not 12 MP; how much faster: benchmarks/review.py.
    assert decoded == [(500, 375)]


def half_sent(served: Running) -> socket.socket:
    slow = socket.create_connection(("127.0.0.1", served.server.port))
    head = f"POST /api/decide?token={TOKEN} HTTP/1.1\r\nHost: {served.host}\r\n"
    slow.sendall(f'{head}Content-Length: 200\r\n\r\n{{"index"'.encode())
    return slow


def test_a_half_sent_body_does_not_hold_other_requests(output: Path, tmp_path: Path) -> None:
    # The server waits 60 s for the rest of the body; a server that served one connection at a
    # time would hold the others that long, past each request's own 10 s timeout.
    with running(output, tmp_path / "thumbs", read_timeout=60) as served:
        slow = half_sent(served)
        try:
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda _: served.request("GET", "/api/state"), range(8)))
            assert all(status == 200 for status, _, _ in answers)
            slow.setblocking(False)
            with pytest.raises(BlockingIOError):  # still open and unanswered: nothing to read
                slow.recv(1000)
        finally:
            slow.close()


def test_a_half_sent_body_is_closed_after_the_read_timeout(served: Running) -> None:
    slow = half_sent(served)
    try:
        slow.settimeout(30)  # a hang guard: the server gives up after its read timeout (1 s)
        assert slow.recv(1000) == b""  # closed, unanswered
    finally:
        slow.close()


def test_a_huge_body_is_refused_unread(served: Running) -> None:
    with socket.create_connection(("127.0.0.1", served.server.port)) as raw:
        head = f"POST /api/decide?token={TOKEN} HTTP/1.1\r\nHost: {served.host}\r\n"
        raw.sendall(f"{head}Content-Length: {10 << 20}\r\n\r\n".encode())
        raw.settimeout(5)
        assert raw.recv(1000).startswith(b"HTTP/1.1 413")
    with socket.create_connection(("127.0.0.1", served.server.port)) as raw:
        head = f"POST /api/undo?token={TOKEN} HTTP/1.1\r\nHost: {served.host}\r\n\r\n"
        raw.sendall(head.encode())
        raw.settimeout(5)
        assert raw.recv(1000).startswith(b"HTTP/1.1 411")  # no length: no body is read


def test_one_bad_request_among_good_ones(served: Running) -> None:
    good = served.index_of("chelsea.png")
    requests = [("POST", "/api/decide", {"index": good, "action": "set", "label": "cat"})] * 5
    requests += [("POST", "/api/decide", {"index": "0; rm -rf /", "action": "set"})]
    requests += [("POST", "/api/decide", {"index": good, "action": "set", "label": "<b>"})]
    requests += [("POST", "/api/decide", [1, 2])]
    requests += [("GET", "/api/rows?offset=x", None), ("GET", "/api/state", None)] * 3
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda r: served.request(*r)[0], requests))
    assert answers == [200] * 5 + [400, 400, 400] + [400, 200] * 3
    assert served.json("GET", "/api/state")["progress"]["reviewed"] == 1


def test_decisions_and_undo_reach_the_review_file(served: Running, output: Path) -> None:
    first, second = served.index_of("chelsea.png"), served.index_of("coffee.png")
    decided = served.json("POST", "/api/decide", {"index": first, "action": "set", "label": "cat"})
    assert decided["decision"]["label"] == "cat"
    served.json("POST", "/api/decide", {"index": second, "action": "unknown"})
    undone = served.json("POST", "/api/undo", {})
    assert undone["undone"] == second and undone["decision"] is None
    assert undone["progress"]["reviewed"] == 1
    rows = served.json("GET", "/api/rows?limit=500")["rows"]
    assert next(r for r in rows if r["index"] == first)["decision"]["label"] == "cat"
    lines = (output.parent / "out.csv.review.jsonl").read_text().splitlines()
    assert len(lines) >= 3


def test_filters_by_label_and_score(served: Running) -> None:
    everything = served.json("GET", "/api/rows?limit=500")
    margins = [row["margin"] for row in everything["rows"] if row["margin"] is not None]
    assert margins == sorted(margins)
    label = everything["rows"][0]["label"]
    same = served.json("GET", f"/api/rows?limit=500&label={label}")["rows"]
    assert same and all(row["label"] == label for row in same)
    sure = served.json("GET", "/api/rows?limit=500&min=0.99")
    assert sure["total"] == 0
    page = served.json("GET", "/api/rows?offset=2&limit=3")
    assert page["rows"] == everything["rows"][2:5]


def test_the_command_prints_its_address_and_stops_on_ctrl_c(output: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "clipcls", "review", str(output), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        line = process.stdout.readline().decode()  # type: ignore[union-attr]
        assert line.startswith("review: http://127.0.0.1:") and "token=" in line
        process.send_signal(2)
        assert process.wait(timeout=10) == 0
        assert b"stopped" in process.stderr.read()  # type: ignore[union-attr]
    finally:
        process.kill()


def test_exports_run_beside_the_page_and_a_second_reviewer_is_refused(
    tmp_path: Path, tiny_model: str
) -> None:
    output = label_output(tmp_path / "run", tiny_model)  # its own: --apply moves files
    with running(output, tmp_path / "thumbs") as served:
        index = served.index_of("coffee.png")
        served.json("POST", "/api/decide", {"index": index, "action": "set", "label": "rocket"})
        second = CliRunner().invoke(app, ["review", str(output), "--port", "0"])
        assert second.exit_code == 2
        assert str(os.getpid()) in second.output  # the holder
        # an export reads the decisions so far, the page open meanwhile
        corrected = tmp_path / "c.csv"
        done = CliRunner().invoke(app, ["review", str(output), "--export", str(corrected)])
        assert done.exit_code == 0, done.output
        assert "coffee.png,rocket," in corrected.read_text()
    support = tmp_path / "support"
    done = CliRunner().invoke(app, ["review", str(output), "--export-support", str(support)])
    assert done.exit_code == 0, done.output
    assert [p.name for p in (support / "rocket").iterdir()] == ["coffee.png"]
    done = CliRunner().invoke(app, ["review", str(output), "--apply"])
    assert done.exit_code == 0, done.output
    moved = list((output.parent / "sorted").rglob("coffee.png"))
    assert moved == [output.parent / "sorted" / "rocket" / "coffee.png"]
