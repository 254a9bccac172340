"""Images behind http(s) URLs: the same predictions as the local files, one error row for a
dead, slow, huge or non-image URL, and the cache keyed by the server's validators. The server
binds 127.0.0.1 only, lives inside the test, and answers a bounded number of requests."""

import csv
import hashlib
import http.server
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES, jsonl, scores
from typer.testing import CliRunner

from clipcls import webfetch
from clipcls.cli import app
from clipcls.images import MARKER

runner = CliRunner()
NAMES = ["chelsea.png", "coffee.png", "rocket.jpg"]
MAX_REQUESTS = 200


class Handler(http.server.BaseHTTPRequestHandler):
    """Sample images with an ETag; /missing.png 404s, /slow.png stalls, /page.png is HTML,
    /nocache.png has no validator, /huge.png declares 10 GB."""

    hits: Counter[str] = Counter()

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass

    def _answer(self, body: bool) -> None:
        Handler.hits[f"{self.command} {self.path}"] += 1
        name = self.path.lstrip("/")
        if sum(Handler.hits.values()) > MAX_REQUESTS or name == "missing.png":
            self.send_error(404)
            return
        if name == "slow.png":
            time.sleep(1.0)
        data = b"<html>not here</html>" if name == "page.png" else b""
        if name in NAMES or name == "nocache.png":
            data = (SAMPLE_IMAGES / (name if name in NAMES else NAMES[0])).read_bytes()
        self.send_response(200)
        length = 10 << 30 if name == "huge.png" else len(data)
        self.send_header("Content-Length", str(length))
        if name != "nocache.png":
            self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest()[:16] + '"')
        self.end_headers()
        if body and name != "huge.png":
            self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)


@pytest.fixture
def server() -> Iterator[str]:
    Handler.hits.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def predict(model: str, *inputs: str):  # type: ignore[no-untyped-def]
    return runner.invoke(
        app,
        ["predict", *inputs, "--model", model, "-t", "photo", "--labels", "cat,dog,rocket"]
        + ["-f", "jsonl", "-q"],
    )


def test_urls_give_the_local_files_predictions(tiny_model: str, server: str) -> None:
    local = jsonl(predict(tiny_model, *(str(SAMPLE_IMAGES / n) for n in NAMES)).stdout)
    remote_rows = jsonl(predict(tiny_model, *(f"{server}/{n}" for n in NAMES)).stdout)
    assert [r["path"] for r in remote_rows] == [f"{server}/{n}" for n in NAMES]
    assert scores(remote_rows) == scores(local)


def test_bad_urls_are_error_rows(
    tiny_model: str, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webfetch, "TIMEOUT", 0.3)
    monkeypatch.setattr(webfetch, "BACKOFF", 0.01)
    names = ["missing.png", "slow.png", "page.png", "huge.png", "chelsea.png"]
    result = predict(tiny_model, *(f"{server}/{n}" for n in names))
    assert result.exit_code == 0, result.output
    rows = {r["path"].rsplit("/", 1)[1]: r for r in jsonl(result.stdout)}
    assert "HTTP 404" in rows["missing.png"]["error"]
    assert "3 tries" in rows["slow.png"]["error"]
    assert "not a readable image" in rows["page.png"]["error"]
    assert "too large to download" in rows["huge.png"]["error"]
    assert "predictions" in rows["chelsea.png"]
    assert Handler.hits["GET /missing.png"] == 1  # a 4xx is not retried
    dead = predict(tiny_model, "http://127.0.0.1:9/nothing.png")  # nothing listens on port 9
    assert "cannot download" in jsonl(dead.stdout)[0]["error"]


def test_the_cache_keys_urls_by_their_validators(tiny_model: str, server: str) -> None:
    urls = [f"{server}/{n}" for n in [*NAMES, "nocache.png"]]
    first = predict(tiny_model, *urls).stdout
    gets = sum(n for key, n in Handler.hits.items() if key.startswith("GET"))
    assert gets == 4
    second = predict(tiny_model, *urls).stdout
    # Cached rows are the same bytes; the one URL downloaded again is embedded in a batch of
    # its own, and a batch's size may move the model's float sums in the last digits.
    assert second.splitlines()[:-1] == first.splitlines()[:-1]
    recomputed, before = jsonl(second)[-1], jsonl(first)[-1]
    assert [s["label"] for s in recomputed["predictions"]] == [
        s["label"] for s in before["predictions"]
    ]
    for new, old in zip(recomputed["predictions"], before["predictions"], strict=True):
        assert abs(new["similarity"] - old["similarity"]) < 1e-5
    again = sum(n for key, n in Handler.hits.items() if key.startswith("GET"))
    assert again == gets + 1  # only the URL without a validator is downloaded again


def test_label_resumes_urls_without_labeling_them_twice(
    tiny_model: str, server: str, tmp_path: Path
) -> None:
    out = tmp_path / "urls.csv"
    args = ["label", f"{server}/chelsea.png", f"{server}/coffee.png", "-o", str(out)]
    args += ["--model", tiny_model, "-t", "photo", "--labels", "cat,dog"]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, [*args, "--resume"])
    assert again.exit_code == 0 and "nothing left to label" in again.stderr
    with out.open(newline="") as stream:
        assert [r["path"] for r in csv.DictReader(stream)] == [
            f"{server}/chelsea.png",
            f"{server}/coffee.png",
        ]


def test_label_sort_into_says_urls_were_not_sorted(
    tiny_model: str, server: str, tmp_path: Path
) -> None:
    # The summary said "copied 2 files into sorted/" while nothing was copied: a URL is no file.
    sorted_dir = tmp_path / "sorted"
    args = ["label", f"{server}/chelsea.png", f"{server}/coffee.png", "-o", str(tmp_path / "u.csv")]
    args += ["--model", tiny_model, "-t", "photo", "--labels", "cat,dog"]
    result = runner.invoke(app, [*args, "--sort-into", str(sorted_dir)])
    assert result.exit_code == 0, result.output
    assert f"copied 0 files into {sorted_dir}" in result.stderr
    assert "2 URLs not sorted: a URL is no file here to copy" in result.stderr
    assert [p.name for p in sorted_dir.rglob("*")] == [MARKER]  # the claim, no image
