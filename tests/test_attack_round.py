"""Issue 20's adversary round: new hostile variants against the hardened edges (server form
fields, resuming a CSV a spreadsheet re-saved). Each test is one attack that broke; servers
run on 127.0.0.1 only and get a bounded number of requests."""

import csv
import http.server
import json
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_IMAGES, unit
from test_serve import Server
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.client.predict import RemoteEncoder, ServerClient
from clipcls.errors import ClipclsError, ImageError
from clipcls.server.roots import OpenRoots, resolve_roots

pytestmark = pytest.mark.slow  # starts clipcls servers: run by .ci/run with -m slow

runner = CliRunner()
IMAGE = (SAMPLE_IMAGES / "chelsea.png").read_bytes()
BOUNDARY = "attackB0undary"


@pytest.fixture(scope="module")
def server(tiny_model: str) -> Iterator[Server]:
    pytest.importorskip("litserve")
    running = Server(tiny_model, "--timeout", "8")
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.stop()


def form(fields: dict[str, str]) -> bytes:
    """A multipart body with one image and the given text fields, as curl -F sends it."""
    body = b""
    for key, value in fields.items():
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
        body += head.encode() + value.encode() + b"\r\n"
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="images"; filename="c.png"\r\n'
    body += head.encode() + b"Content-Type: image/png\r\n\r\n" + IMAGE + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize("top_k", ["\u00b2", "9" * 5000, "\u0661"])
def test_a_form_top_k_that_is_no_ascii_number_is_a_400_not_a_500(
    server: Server, top_k: str
) -> None:
    # str.isdigit() is true for "²" (int() then raises) and for "١" (int() takes it), and
    # int() refuses 5000 digits: each was a 500 Internal Server Error, or an Arabic digit read.
    status, answer = server.call(
        "POST",
        "/v1/predict",
        form({"labels": "cat,dog", "top_k": top_k}),
        kind=f"multipart/form-data; boundary={BOUNDARY}",
    )
    assert status == 400, answer
    assert "top_k" in answer["error"]


def test_resume_reads_a_csv_a_spreadsheet_saved_with_a_byte_order_mark(
    tiny_model: str, tmp_path: Path
) -> None:
    # Excel's "CSV UTF-8" and LibreOffice's default re-save add a BOM (and quote and CRLF);
    # resume refused it saying the columns differ while printing the same names.
    photos = tmp_path / "in"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(SAMPLE_IMAGES / "chelsea.png", photos / name)
    args = ["label", str(photos), "--model", tiny_model, "--labels", "=cmd,dog"]
    output = tmp_path / "out.csv"
    assert runner.invoke(app, [*args, "-o", str(output)]).exit_code == 0
    with output.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    with output.open("w", newline="", encoding="utf-8-sig") as stream:
        csv.writer(stream, quoting=csv.QUOTE_ALL).writerows(rows[:-1])  # one row lost
    resumed = runner.invoke(app, [*args, "-o", str(output), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    with output.open(newline="", encoding="utf-8-sig") as stream:
        again = list(csv.reader(stream))
    assert again[0] == rows[0]
    assert sorted(again[1:]) == sorted(rows[1:])  # the lost row back, nothing doubled


@pytest.mark.parametrize("tail", ["/", "/.", "/../c.png", "//./"])
def test_a_file_named_as_a_folder_is_not_opened_as_the_file(tmp_path: Path, tail: str) -> None:
    # The kernel answers ENOTDIR for c.png/ and c.png/../c.png (`predict c.png/` says the
    # input does not exist); the server's realpath dropped the tail and served c.png.
    shutil.copy(SAMPLE_IMAGES / "chelsea.png", tmp_path / "c.png")
    roots = OpenRoots(resolve_roots([str(tmp_path)]))
    with roots.open(str(tmp_path / "c.png")) as stream:
        assert stream.read(8) == IMAGE[:8]
    with pytest.raises(ImageError, match="file not found"):
        roots.open(str(tmp_path / "c.png") + tail)


def test_a_pretrained_the_server_lacks_is_refused_without_printing_none(
    server: Server, tmp_path: Path
) -> None:
    # The refusal named the server's weights as "local-dir:... with None".
    image = tmp_path / "c.png"
    image.write_bytes(IMAGE)
    args = ["predict", str(image), "--server", server.url, "--labels", "cat,dog"]
    refused = runner.invoke(app, [*args, "--pretrained", "openai"])
    assert refused.exit_code == 2, refused.output
    assert "--pretrained openai" in refused.output
    assert "None" not in refused.output


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A loopback site that redirects every request to `target` and records the headers it is
    sent (the redirect's target is the same class on another port)."""

    target = ""
    seen: list[dict[str, str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        type(self).seen.append(dict(self.headers.items()))
        if self.target:
            self.send_response(302)
            self.send_header("Location", self.target + self.path)
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_the_api_key_is_never_sent_where_the_server_redirects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # urllib follows a 302 and copies every header but Content-*: --server answering with a
    # redirect (a proxy, a moved host, plain http) got CLIPCLS_API_KEY sent to that host.
    class Elsewhere(_Recorder):
        seen: list[dict[str, str]] = []

    class Redirecting(_Recorder):
        seen: list[dict[str, str]] = []

    sites = [http.server.HTTPServer(("127.0.0.1", 0), kind) for kind in (Elsewhere, Redirecting)]
    Redirecting.target = f"http://127.0.0.1:{sites[0].server_address[1]}"
    threads = [threading.Thread(target=site.serve_forever, daemon=True) for site in sites]
    for thread in threads:
        thread.start()
    monkeypatch.setenv("CLIPCLS_API_KEY", "secret-key-123456")
    image = tmp_path / "c.png"
    image.write_bytes(IMAGE)
    try:
        url = f"http://127.0.0.1:{sites[1].server_address[1]}"
        result = runner.invoke(app, ["predict", str(image), "--server", url, "--labels", "a,b"])
    finally:
        for site in sites:
            site.shutdown()
            site.server_close()
    assert result.exit_code == 1, result.output
    assert "answered 302" in result.output
    assert Redirecting.seen and "secret-key-123456" in str(Redirecting.seen)
    assert not any("secret-key-123456" in str(headers) for headers in Elsewhere.seen)


def hostile_site(server: Server, answer: object) -> http.server.HTTPServer:
    """A loopback site that answers /v1/info as the real server does and every POST with
    answer, serving in a thread until shut down."""
    with urllib.request.urlopen(server.url + "/v1/info", timeout=30) as reply:
        facts = reply.read()
    body = json.dumps(answer).encode()

    class Hostile(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def reply(self, data: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self.reply(facts)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.reply(body)

    site = http.server.HTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    return site


HOSTILE_ANSWERS = {
    "a label never asked": {"label": "zebra", "probability": 0.9, "similarity": 0.1},
    "a NaN probability": {"label": "cat", "probability": "nan", "similarity": 0.1},
    "no probability": {"label": "cat", "similarity": 0.1},
    "not an object": "cat",
}


@pytest.mark.parametrize("hostile", HOSTILE_ANSWERS, ids=list(HOSTILE_ANSWERS))
def test_a_server_answer_that_is_no_prediction_for_the_labels_asked_is_one_error_line(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hostile: str
) -> None:
    # label --server sorted into sorted/zebra/ (a label never asked), wrote `nan`, or died
    # with a KeyError/AttributeError traceback, on whatever a server (or a proxy) answered.
    body = {"predictions": [{"predictions": [HOSTILE_ANSWERS[hostile]]}]}
    site = hostile_site(server, body)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "c.png").write_bytes(IMAGE)
    monkeypatch.chdir(tmp_path)
    url = f"http://127.0.0.1:{site.server_address[1]}"
    args = ["label", "in", "--server", url, "--labels", "cat", "-o", "o.csv", "--sort-into", "s"]
    try:
        result = runner.invoke(app, args)
    finally:
        site.shutdown()
        site.server_close()
    assert result.exit_code == 1, result.output
    assert "sent an answer clipcls cannot read" in result.output
    assert not (tmp_path / "s" / "zebra").exists()


@pytest.mark.parametrize(
    "answer",
    [{"nope": 1}, {"embeddings": [[0.1, 0.2]]}, {"embeddings": "x"}, [], {"embeddings": [["a"]]}],
    ids=["no embeddings", "too few", "not numbers", "not an object", "a string vector"],
)
def test_a_server_text_answer_that_is_no_embeddings_is_a_clipcls_error(
    server: Server, answer: object
) -> None:
    # evaluate --server's text tower died with a KeyError, TypeError or numpy traceback.
    site = hostile_site(server, answer)
    try:
        encoder = RemoteEncoder(ServerClient(f"http://127.0.0.1:{site.server_address[1]}"))
        with pytest.raises(ClipclsError, match="sent an answer clipcls cannot read"):
            encoder.encode_texts(["a photo of a cat", "a photo of a dog"])
    finally:
        site.shutdown()
        site.server_close()


def test_a_server_url_with_a_password_is_refused_without_echoing_it() -> None:
    from clipcls.client.predict import ServerClient
    from clipcls.errors import UsageError

    with pytest.raises(UsageError) as refused:
        ServerClient("http://user:s3cret@127.0.0.1:9/")
    assert "s3cret" not in str(refused.value) and "user:password" in str(refused.value)


def narrowing_proxy(server: Server) -> http.server.HTTPServer:
    """A loopback site that passes every request on to server and cuts each image embedding
    in its answers to 4 floats (still unit vectors): a server of another width than its texts."""

    def narrowed(value: object) -> object:
        if isinstance(value, dict):
            return {
                key: unit(np.asarray(item[:4])).tolist()
                if key == "embedding" and isinstance(item, list)
                else narrowed(item)
                for key, item in value.items()
            }
        return [narrowed(item) for item in value] if isinstance(value, list) else value

    class Narrowing(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def passed_on(self, body: bytes | None) -> None:
            headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
            request = urllib.request.Request(server.url + self.path, body, headers)
            with urllib.request.urlopen(request, timeout=60) as reply:
                data = reply.read()
            if body is not None:
                data = json.dumps(narrowed(json.loads(data))).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self.passed_on(None)

        def do_POST(self) -> None:
            self.passed_on(self.rfile.read(int(self.headers["Content-Length"])))

    site = http.server.HTTPServer(("127.0.0.1", 0), Narrowing)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    return site


def test_image_embeddings_of_another_width_than_the_texts_are_one_error_line(
    server: Server, tmp_path: Path
) -> None:
    # Where the images are embedded before the prompts (a support set, evaluate's dataset),
    # the server's width went unchecked and scoring died with a numpy matmul traceback.
    for label in ("cat", "coffee"):
        (tmp_path / "data" / label).mkdir(parents=True)
        shutil.copy(
            SAMPLE_IMAGES / f"{'chelsea' if label == 'cat' else label}.png",
            tmp_path / "data" / label,
        )
    site = narrowing_proxy(server)
    url = f"http://127.0.0.1:{site.server_address[1]}"
    data, out = str(tmp_path / "data"), str(tmp_path / "o.csv")
    try:
        for args in (
            ["label", data, "--labels", "cat,coffee", "--support", data, "-o", out, "--no-cache"],
            ["evaluate", data, "--no-cache", "-q"],
        ):
            result = runner.invoke(app, [*args, "--server", url])
            assert result.exit_code == 1, result.output
            assert "sent an answer clipcls cannot read" in result.stderr
            assert len(result.stderr.strip().splitlines()) <= 3  # notices, then the error
    finally:
        site.shutdown()
        site.server_close()
