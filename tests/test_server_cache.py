"""Through a server, embeddings are computed once: the client looks its own cache up under the
keys it files that server's answers under and sends only the misses (a new-label re-run sends
no image, rows as a local run's); the server caches files by path and identity, uploads by
content; a changed file is never answered from the cache; /healthz is 503 until the model can
serve."""

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SAMPLE_IMAGES, CountingEncoder, jsonl, unit
from PIL import Image
from typer.testing import CliRunner

from clipcls.cache import EmbeddingCache
from clipcls.cli import app
from clipcls.client.protocol import Limits, parse_request
from clipcls.filekey import FileKey

runner = CliRunner()
LABELS, NEW_LABELS = "cat,coffee,rocket", "dog,tea,car"


def test_a_content_key_names_the_bytes_and_an_open_file_key_is_the_file(tmp_path: Path) -> None:
    one = FileKey.of_content(b"abc")
    assert one == FileKey.of_content(b"abc") and one != FileKey.of_content(b"abd")
    assert not one.path.startswith("/") and one.version == (3, 0, 0, 0)
    photo = tmp_path / "a.png"
    photo.write_bytes((SAMPLE_IMAGES / "chelsea.png").read_bytes())
    with photo.open("rb") as stream:
        assert FileKey.of_open(str(photo), stream.fileno()) == FileKey.of(photo)


def worker(cache: EmbeddingCache | None) -> Any:
    """The server's model worker with a counting fake model, as setup() leaves it."""
    pytest.importorskip("litserve")
    import threading

    from clipcls.server.worker import ClipclsAPI

    api = ClipclsAPI.__new__(ClipclsAPI)
    api.limits, api.encoder = Limits(), CountingEncoder()
    api.texts, api.cache, api.lookups = api.encoder, cache, threading.Lock()
    api.classifiers, api.batch_size = OrderedDict(), 8
    api.pool = ThreadPoolExecutor(2)
    return api


def upload(api: Any, name: str, data: bytes) -> dict[str, Any]:
    body = {"images": [{"name": name, "data": base64.b64encode(data).decode()}]}
    record = parse_request({**body, "labels": ["a", "b"], "embedding": True}, Limits(), [])
    answer: dict[str, Any] = api.predict([api.decode_request(record.to_record())])[0]
    return answer["predictions"][0]


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, "PNG")
    return out.getvalue()


def test_the_worker_embeds_the_same_uploaded_bytes_once(tmp_path: Path) -> None:
    api = worker(EmbeddingCache(tmp_path / "server"))
    first = upload(api, "mine.png", png((200, 10, 10)))
    second = upload(api, "yours.png", png((200, 10, 10)))  # another client, another name
    assert api.encoder.images_encoded == 1
    assert second["path"] == "yours.png" and second["embedding"] == first["embedding"]
    upload(api, "other.png", png((10, 200, 10)))
    assert api.encoder.images_encoded == 2
    uncached = worker(None)  # serve --no-cache
    upload(uncached, "a.png", png((1, 2, 3)))
    upload(uncached, "b.png", png((1, 2, 3)))
    assert uncached.encoder.images_encoded == 2


# What follows starts clipcls servers (on 127.0.0.1, stopped in the test).


def start_server(model: str, cache: Path, *args: str) -> Any:
    """A `clipcls serve` whose embedding cache is its own (not the client's)."""
    pytest.importorskip("litserve")
    from test_serve import Server

    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLIPCLS_CACHE_DIR", str(cache))
        return Server(model, *args)


class Sent:
    """What the client sends the server: images in predict requests, texts to embed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from clipcls.client.predict import ServerClient

        self.images = self.bytes = self.texts = 0
        predict, post = ServerClient.predict, ServerClient.post

        def counted_predict(client: Any, images: list[dict[str, Any]], request: Any) -> Any:
            self.images += len(images)
            self.bytes += sum(len(entry.get("data", b"")) for entry in images)
            return predict(client, images, request)

        def counted_post(client: Any, body: dict[str, Any]) -> Any:
            self.texts += len(body.get("texts", []))
            return post(client, body)

        monkeypatch.setattr(ServerClient, "predict", counted_predict)
        monkeypatch.setattr(ServerClient, "post", counted_post)


def predict(*args: str) -> str:
    result = runner.invoke(app, ["predict", *args, "-f", "jsonl", "-q"])
    assert result.exit_code == 0, result.output
    return result.stdout


def close(got: str, want: str) -> None:
    """The same rows, probabilities to 1e-4 (embeddings computed apart may differ in bits)."""
    for a, b in zip(jsonl(got), jsonl(want), strict=True):
        assert a["path"] == b["path"] and ("error" in a) == ("error" in b)
        for x, y in zip(a.get("predictions", []), b.get("predictions", []), strict=True):
            assert x["label"] == y["label"]
            assert x["probability"] == pytest.approx(y["probability"], abs=1e-4)


@pytest.mark.slow
def test_new_labels_through_the_server_send_no_image_and_match_a_local_run(
    tiny_model: str, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server(tiny_model, tmp_path / "server-cache")
    try:
        sent = Sent(monkeypatch)
        predict(str(photos), "--labels", LABELS, "--server", server.url)
        assert sent.images == 4 and sent.bytes > 0 and sent.texts > 0
        texts = sent.texts
        sent.images = sent.bytes = sent.texts = 0
        remote = predict(str(photos), "--labels", NEW_LABELS, "--server", server.url)
        assert (sent.images, sent.bytes) == (0, 0)  # every image embedding was cached here
        assert sent.texts == texts  # as many new prompts as the first run's, nothing more
        # A local run of the model computes its own (never the server's): the same rows, to 1e-4.
        close(remote, predict(str(photos), "--labels", NEW_LABELS, "--model", tiny_model))
        uncached = ("--model", tiny_model, "--no-cache")
        close(remote, predict(str(photos), "--labels", NEW_LABELS, *uncached))
        # Only what the cache lacks goes: a broken file (its error row in place), not the rest.
        (photos / "broken.png").write_bytes(b"not an image")
        (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
        inputs = (str(photos), str(tmp_path / "gone.png"), "--labels", "cat,tea")
        sent.images = sent.texts = 0
        mixed = predict(*inputs, "--server", server.url)
        assert (sent.images, sent.texts) == (1, 0)
        rows = jsonl(mixed)
        assert [Path(row["path"]).name for row in rows][:2] == ["astronaut.png", "broken.png"]
        assert "error" in rows[1] and "error" in rows[-1] and "predictions" in rows[0]
        close(mixed, predict(*inputs, *uncached))
    finally:
        assert server.stop() == 0


@pytest.mark.slow
def test_two_clients_uploading_the_same_bytes_embed_once_at_the_server(
    tiny_model: str, tmp_path: Path
) -> None:
    server_cache = tmp_path / "server-cache"
    server = start_server(tiny_model, server_cache)
    try:
        data = (SAMPLE_IMAGES / "coffee.png").read_bytes()

        def ask(name: str) -> np.ndarray:
            images = [{"name": name, "data": base64.b64encode(data).decode()}]
            status, answer = server.predict(images, embedding=True)
            assert status == 200, answer
            return np.asarray(answer["predictions"][0]["embedding"], np.float32)

        first = ask("mine.png")
        model = server.call("GET", "/v1/info")[1]["image_cache_key"]
        cache = EmbeddingCache(server_cache)
        key = FileKey.of_content(data)
        assert np.allclose(cache.get_images(model, [key])[key.path], first)
        # Whatever the cache holds for those bytes is the answer: nothing is embedded again.
        planted = unit(np.arange(1, len(first) + 1, dtype=np.float32))
        cache.put_images(model, [(key, planted)])
        assert np.allclose(ask("yours.png"), planted, atol=1e-6)
        # The same bytes as a multipart upload from a client that caches nothing of its own:
        # answered from the server's cache too (an embedding made again would replace it).
        (tmp_path / "copy.png").write_bytes(data)
        args = [str(tmp_path / "copy.png"), "--labels", "a,b", "--server", server.url]
        assert "predictions" in jsonl(predict(*args, "--no-cache"))[0]
        assert np.allclose(cache.get_images(model, [key])[key.path], planted, atol=1e-6)
    finally:
        assert server.stop() == 0


def bmp(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(out, "BMP")  # the same size whatever the colour
    return out.getvalue()


@pytest.mark.slow
def test_a_changed_file_is_not_answered_from_a_stale_cache(tiny_model: str, tmp_path: Path) -> None:
    folder = tmp_path / "allowed"
    folder.mkdir()
    photo = folder / "x.bmp"
    photo.write_bytes(bmp((220, 20, 20)))
    server = start_server(tiny_model, tmp_path / "server-cache", "--allow-dir", str(folder))
    labels = ("--labels", LABELS)
    try:
        before = predict(str(photo), *labels, "--server", server.url)  # sent by path
        old = photo.stat()
        photo.write_bytes(bmp((20, 20, 220)))
        os.utime(photo, ns=(old.st_atime_ns, old.st_mtime_ns))
        assert (photo.stat().st_size, photo.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)
        want = predict(str(photo), *labels, "--model", tiny_model, "--no-cache")
        assert jsonl(want)[0] != jsonl(before)[0]
        server_side = predict(str(photo), *labels, "--server", server.url, "--no-cache")
        close(server_side, want)  # the server's cache did not answer for the old file
        client_side = predict(str(photo), *labels, "--server", server.url)
        close(client_side, want)  # nor did this side's
    finally:
        assert server.stop() == 0


GATE_HOOK = """
import os, time
if os.environ.get("CLIPCLS_TEST_GATE"):
    from clipcls.server import worker
    loading = worker.ClipclsAPI.setup
    def gated(self, device):
        while not os.path.exists(os.environ["CLIPCLS_TEST_GATE"]):
            time.sleep(0.05)
        loading(self, device)
    worker.ClipclsAPI.setup = gated
"""


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def gated_server(tiny_model: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A server whose model worker waits, before loading, until the gate file exists."""
    pytest.importorskip("litserve")
    from test_serve import free_port

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(GATE_HOOK)
    gate, port = tmp_path / "gate", free_port()
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "CLIPCLS_TEST_GATE": str(gate)}
    command = [sys.executable, "-m", "clipcls", "serve", "--model", tiny_model]
    process = subprocess.Popen([*command, "--port", str(port)], env=env, stderr=subprocess.PIPE)
    try:
        yield f"http://127.0.0.1:{port}", gate
    finally:
        gate.touch()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


@pytest.mark.slow
def test_healthz_is_503_until_the_model_can_serve(gated_server: tuple[str, Path]) -> None:
    url, gate = gated_server
    deadline = time.monotonic() + 120
    while True:  # the port is bound at once; it answers once the HTTP process runs
        try:
            status, body = get(url + "/healthz")
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert status == 503 and json.loads(body) == {"error": "the model is still loading"}
    time.sleep(1.0)  # LitServe's own health check is not what answers
    assert get(url + "/healthz")[0] == 503 and get(url + "/v1/info")[0] == 503
    gate.touch()
    while (status := get(url + "/healthz")[0]) != 200:
        assert status == 503 and time.monotonic() < deadline
        time.sleep(0.1)
    assert get(url + "/v1/info")[0] == 200
