"""Shared by the review tests: a real label output (tiny model, --top-k 2, --sort-into) whose
files are then changed under it, and a review server run in this process."""

from __future__ import annotations

import http.client
import json
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import SAMPLE_IMAGES
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.review.api import ReviewApi
from clipcls.review.log import ReviewLog
from clipcls.review.server import ReviewServer
from clipcls.review.table import load_review
from clipcls.review.thumbs import Thumbs

XSS = "<img src=x onerror=alert(1)>.jpg"
LABELS = "cat,coffee,rocket,person"
TOKEN = "test-token-0123456789abcdef"


def bomb_png() -> bytes:
    """A valid PNG header declaring 100000 x 100000 pixels (10 gigapixels), no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def label_output(root: Path, model: str, labels: str = LABELS) -> Path:
    """Label seven photos (one named like an HTML tag) into root/out.csv, sorted into
    root/sorted; then one file becomes a FIFO, one a link to /dev/zero, one a decompression
    bomb and one is deleted, as files change under a finished run."""
    photos = root / "photos"
    photos.mkdir(parents=True)
    sources = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "china.jpg"]
    for name in sources:
        (photos / name).write_bytes((SAMPLE_IMAGES / name).read_bytes())
    for name in ("fifo.jpg", "zero.jpg", "bomb.png", "gone.jpg", XSS):
        (photos / name).write_bytes((SAMPLE_IMAGES / "rocket.jpg").read_bytes())
    output = root / "out.csv"
    args = ["label", str(photos), "--labels", labels, "--model", model, "--top-k", "2"]
    args += ["-o", str(output), "--sort-into", str(root / "sorted"), "--mode", "symlink"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    (photos / "fifo.jpg").unlink()
    os.mkfifo(photos / "fifo.jpg")
    (photos / "zero.jpg").unlink()
    (photos / "zero.jpg").symlink_to("/dev/zero")
    (photos / "bomb.png").write_bytes(bomb_png())
    (photos / "gone.jpg").unlink()
    return output


@dataclass
class Running:
    server: ReviewServer
    log: ReviewLog

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request as written (no path clean-up): status, headers, body."""
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        sent = {"Host": self.host, **(headers or {})}
        if token is not None:
            path += ("&" if "?" in path else "?") + f"token={token}"
        data = None if body is None else json.dumps(body).encode()
        try:
            connection.request(method, path, body=data, headers=sent)
            answer = connection.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        finally:
            connection.close()

    def json(self, method: str, path: str, body: Any = None) -> Any:
        status, _, data = self.request(method, path, body)
        assert status == 200, data
        return json.loads(data)

    def index_of(self, name: str) -> int:
        rows = self.json("GET", "/api/rows?limit=500")["rows"]
        return next(row["index"] for row in rows if os.path.basename(row["path"]) == name)


@contextmanager
def running(output: Path, thumbs: Path, read_timeout: float = 1.0) -> Iterator[Running]:
    """A review server for output on 127.0.0.1 (a free port) in a thread, stopped after."""
    table = load_review(output)
    log = ReviewLog.open(table)
    server = ReviewServer(ReviewApi(table, log, Thumbs(thumbs)), "127.0.0.1", 0, TOKEN)
    server.read_timeout = read_timeout
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Running(server, log)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        log.close()
