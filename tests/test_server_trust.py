"""What a `--server` sent is its own: kept in the client's cache apart from what this machine
computed (keyed by the server's URL and the weights it reports), so a server that repeats a
real server's facts and sends fake vectors never changes a later local run's answer."""

import email.parser
import email.policy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import jsonl
from typer.testing import CliRunner

from clipcls import __version__
from clipcls.backends.base import BackendConfig
from clipcls.backends.local import LocalBackend
from clipcls.cli import app
from clipcls.settings import ModelSettings

runner = CliRunner()
LABELS = "cat,coffee,rocket"


def local_facts(model: str) -> tuple[dict[str, Any], int]:
    """What a real `clipcls serve --model MODEL` on this machine says in /v1/info: the keys a
    local run of the model caches its embeddings under, its scale and its weights; and the
    width of its embeddings."""
    backend = LocalBackend(BackendConfig(settings=ModelSettings(model=model), quiet=True))
    encoder = backend.encoder
    return {
        "clipcls": __version__,
        "model": encoder.info.model,
        "pretrained": encoder.info.pretrained,
        "weights": backend.weights,
        "device": encoder.info.device,
        "precision": encoder.info.precision,
        "logit_scale": encoder.logit_scale,
        "logit_bias": encoder.logit_bias,
        "image_cache_key": encoder.plan.image_cache_key,
        "text_cache_key": encoder.plan.text_cache_key,
    }, int(encoder.encode_texts(["a"]).shape[1])


class LyingServer:
    """A server on 127.0.0.1 that answers /v1/info with a real server's facts and embeds every
    image as e0, every text that names a rocket as e0 and the others as e1 (so `rocket`
    wins everything); it counts the images and texts it was asked for."""

    def __init__(self, facts: dict[str, Any], dim: int) -> None:
        self.facts, self.dim, self.images, self.texts = dict(facts), dim, 0, 0
        self.e0, self.e1 = np.eye(dim)[0].tolist(), np.eye(dim)[1].tolist()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.answer(owner.facts)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                self.answer(owner.predicted(self.headers["Content-Type"], body))

            def answer(self, record: Any) -> None:
                data = json.dumps(record).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def predicted(self, kind: str, body: bytes) -> dict[str, Any]:
        if kind.startswith("multipart/"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + kind.encode() + b"\r\n\r\n" + body
            )
            count = sum(1 for part in message.iter_parts() if part.get_filename() is not None)
        else:
            record = json.loads(body)
            if "texts" in record:
                self.texts += len(record["texts"])
                vectors = [self.e0 if "rocket" in t else self.e1 for t in record["texts"]]
                return {"embeddings": vectors}
            count = len(record["images"])
        self.images += count
        row = {
            "path": "x",
            "predictions": [{"label": "image", "probability": 1.0, "similarity": 1.0}],
            "embedding": self.e0,
        }
        return {"predictions": [row] * count}

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def liar(tiny_model: str) -> Iterator[LyingServer]:
    server = LyingServer(*local_facts(tiny_model))
    yield server
    server.close()


def predict(*args: str) -> list[dict[str, Any]]:
    result = runner.invoke(app, ["predict", *args, "--labels", LABELS, "-f", "jsonl", "-q"])
    assert result.exit_code == 0, result.output
    return jsonl(result.stdout)


def top(rows: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """Each row's best label and its probability (3 decimals)."""
    best = [r["predictions"][0] for r in rows]
    return [(b["label"], round(b["probability"], 3)) for b in best]


def test_a_lying_server_never_answers_a_later_local_run(
    liar: LyingServer, tiny_model: str, photos: Path
) -> None:
    lied = predict(str(photos), "--server", liar.url)
    assert {label for label, _ in top(lied)} == {"rocket"} and liar.images == 4
    # The server is gone; the model loads here: its own embeddings, not the server's.
    liar.close()
    local = predict(str(photos), "--model", tiny_model)
    own = predict(str(photos), "--model", tiny_model, "--no-cache")
    for got, want in zip(local, own, strict=True):
        for a, b in zip(got["predictions"], want["predictions"], strict=True):
            assert a["label"] == b["label"]
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)
    assert top(local) != top(lied)


def test_a_lying_servers_search_matrix_never_ranks_a_local_search(
    liar: LyingServer, tiny_model: str, photos: Path
) -> None:
    def ranked(*args: str) -> list[dict[str, Any]]:
        result = runner.invoke(app, ["search", str(photos), "a rocket", *args, "-f", "jsonl"])
        assert result.exit_code == 0, result.output
        return jsonl(result.stdout)

    lied = ranked("--server", liar.url)  # stored beside the cache, as a local search's is
    assert {round(hit["score"], 3) for hit in lied} == {1.0}
    liar.close()
    local = ranked("--model", tiny_model)
    assert [hit["path"] for hit in local] == [
        hit["path"] for hit in ranked("--model", tiny_model, "--no-cache")
    ]
    assert all(hit["score"] < 0.99 for hit in local)


def test_a_client_reuses_what_the_same_server_sent_and_no_other(
    liar: LyingServer, tiny_model: str, photos: Path
) -> None:
    first = predict(str(photos), "--server", liar.url)
    asked = (liar.images, liar.texts)
    assert asked[0] == 4 and asked[1] > 0
    # The same server (its URL written with a slash): every embedding is this side's already.
    assert predict(str(photos), "--server", liar.url + "/") == first
    assert (liar.images, liar.texts) == asked
    # Another URL with the same facts is another server: it is asked again.
    other = LyingServer(liar.facts, liar.dim)
    try:
        predict(str(photos), "--server", other.url)
        assert other.images == 4 and other.texts == asked[1]
    finally:
        other.close()
    # The same URL reporting other weights is another server too.
    liar.facts["weights"] = "local-dir:sha256:" + "0" * 64
    predict(str(photos), "--server", liar.url)
    assert liar.images == 8


# A query holding bytes that are not UTF-8 (a Latin-1 terminal's `café`, read by Python as
# the escaped byte U+DCE9): embedded as CLIP's tokenizer reads it, on every path.
ODD_QUERY = "caf\udce9 + \udcff"
READ_AS = "caf\ufffd + \ufffd"


def search(*args: str) -> list[dict[str, Any]]:
    result = runner.invoke(app, ["search", *args, "-f", "jsonl", "-q"])
    assert result.exit_code == 0, result.output
    return jsonl(result.stdout)


def test_a_query_not_utf8_is_parsed_into_text_any_server_reads(
    tiny_model: str, photos: Path
) -> None:
    from clipcls.client.checks import check_prompts
    from clipcls.terms import Query

    query = Query.parse(ODD_QUERY)
    assert query.text == READ_AS and Query.parse(query.text) == query
    check_prompts([term.text for term in query.terms])  # what a server's guard asks of it
    # the local tokenizer read it so already: the same ranking, to the bit
    assert search(str(photos), ODD_QUERY, "--model", tiny_model) == search(
        str(photos), READ_AS, "--model", tiny_model
    )


@pytest.mark.slow
def test_a_query_not_utf8_answers_through_a_server_as_it_does_here(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from test_search_quick import RUN
    from test_server_cache import start_server

    root = tmp_path / "allowed"
    shared = root / "photos"
    shared.mkdir(parents=True)
    for photo in photos.iterdir():
        (shared / photo.name).write_bytes(photo.read_bytes())
    server = start_server(tiny_model, tmp_path / "server-cache", "--allow-dir", str(root))
    try:
        for folder in (shared, photos):  # searched by the server; here, with its embeddings
            here = search(str(folder), ODD_QUERY, "--model", tiny_model)
            there = search(str(folder), ODD_QUERY, "--server", server.url)
            assert [hit["path"] for hit in there] == [hit["path"] for hit in here]
            for got, want in zip(there, here, strict=True):
                assert got["score"] == pytest.approx(want["score"], abs=1e-3)
        # the fast path of a whole process, its argument the bytes a Latin-1 terminal sends
        argv = [b"search", bytes(shared), b"caf\xe9 + \xff", b"--server", server.url.encode()]
        done = subprocess.run(
            [sys.executable, "-c", RUN, *argv, b"-f", b"jsonl", b"-q"],
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert jsonl(done.stdout.decode()) == search(str(shared), ODD_QUERY, "--server", server.url)
        assert done.stderr.decode().splitlines()[-1] == "loaded:"  # answered by the fast path
    finally:
        assert server.stop() == 0


def test_a_local_resume_never_takes_a_servers_rows_as_its_own(
    liar: LyingServer, tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    """The output records the server its rows came through: a lying server that repeats the
    real weights' digest once made a later local --resume keep its rows beside this machine's."""
    from clipcls.client.wire import base_url

    out = tmp_path / "out.jsonl"
    label = ["label", str(photos), "--labels", LABELS, "-o", str(out), "-q"]
    done = runner.invoke(app, [*label, "--server", liar.url])
    assert done.exit_code == 0, done.output
    written = out.read_bytes()
    assert {row["label"] for row in jsonl(written.decode())} == {"rocket"}
    (photos / "more.png").write_bytes((photos / "coffee.png").read_bytes())
    where = base_url(liar.url)
    other = LyingServer(liar.facts, liar.dim)
    try:
        for args in (["--model", tiny_model], ["--server", other.url]):
            refused = runner.invoke(app, [*label, *args, "--resume"])
            assert refused.exit_code == 2, refused.output
            line = refused.stderr.strip()
            assert "\n" not in line and f"came through the server at {where}" in line, line
            assert f"resume with --server {where}" in line and "--overwrite" in line, line
            assert out.read_bytes() == written and other.images == 0
        # the same server, however its URL is written, continues it
        again = runner.invoke(app, [*label, "--server", where + "/", "--resume"])
        assert again.exit_code == 0, again.output
        assert len(jsonl(out.read_text())) == 5 and liar.images == 5
    finally:
        other.close()


def test_a_served_resume_never_continues_rows_this_machine_computed(
    liar: LyingServer, tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"
    label = ["label", str(photos), "--labels", LABELS, "-o", str(out), "-q"]
    assert runner.invoke(app, [*label, "--model", tiny_model]).exit_code == 0
    written = out.read_bytes()
    (photos / "more.png").write_bytes((photos / "coffee.png").read_bytes())
    refused = runner.invoke(app, [*label, "--server", liar.url, "--resume"])
    assert refused.exit_code == 2 and "were computed on this machine" in refused.stderr
    assert "resume without --server" in refused.stderr and "--overwrite" in refused.stderr
    assert out.read_bytes() == written and liar.images == 0
    assert runner.invoke(app, [*label, "--model", tiny_model, "--resume"]).exit_code == 0
