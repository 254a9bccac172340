"""`clipcls serve` answers a search over folders under its --allow-dir from its own cache and
a matrix it keeps warm: the same ranking as a local `clipcls search`, 403 outside its roots,
and a repeat query with nothing embedded again."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipcls.backends.server import ServerBackend
from clipcls.cli import app

pytest.importorskip("litserve")
from test_fewshot_serve import call as served_call  # noqa: E402
from test_fewshot_serve import free_port, wait_for_info  # noqa: E402
from test_search_quick import RUN  # noqa: E402

pytestmark = pytest.mark.slow  # starts a clipcls server: run by .ci/run with -m slow
SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
QUERY = "a cat + coffee"


def call(url: str, body: dict | None = None) -> dict:  # type: ignore[type-arg]
    return served_call(url, body, timeout=120)  # a first search embeds every image


def status_of(url: str, body: dict) -> int:  # type: ignore[type-arg]
    try:
        call(url, body)
    except urllib.error.HTTPError as error:
        return error.code
    return 200


def refuse(*args: object) -> None:
    raise AssertionError("embedded on the client: the server's search was not used")


def local_search(folder: Path, model: str, *more: str) -> list[dict]:  # type: ignore[type-arg]
    args = ["search", str(folder), QUERY, "--model", model, "--precision", "fp32", "-f", "jsonl"]
    result = CliRunner().invoke(app, [*args, *more])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def whole_search(folder: Path, url: str, *more: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", RUN, "search", str(folder), QUERY, "--server", url, *more]
    done = subprocess.run([*command, "-f", "jsonl"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def test_served_search_ranks_like_a_local_search_and_keeps_its_matrix(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, outside = tmp_path / "allowed", tmp_path / "outside"
    folder = root / "photos"
    (folder / "more").mkdir(parents=True)
    outside.mkdir()
    for index, image in enumerate(sorted(SAMPLES.glob("*.*g"))):
        shutil.copy(image, (folder / "more" if index % 2 else folder) / image.name)
    shutil.copy(SAMPLES / "rocket.jpg", outside / "rocket.jpg")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "clipcls", "serve", "--model", tiny_model]
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(
            [*command, "--precision", "fp32", "--port", str(port), "--allow-dir", str(root)],
            stderr=log,
        )
    try:
        wait_for_info(server, url)
        body = {"search": {"folders": [str(folder)], "text": QUERY, "k": 5}}
        first = call(f"{url}/v1/predict", body)
        assert first["embedded"] == 12 and first["failures"] == []
        started = time.perf_counter()
        second = call(f"{url}/v1/predict", body)
        seconds = time.perf_counter() - started
        print(f"warm served search over 12 images: {seconds * 1000:.1f} ms")
        assert second["embedded"] == 0 and second["search"] == first["search"]

        local = local_search(folder, tiny_model)[:5]
        served = first["search"]
        assert [hit["path"] for hit in served] == [row["path"] for row in local]
        for hit, row in zip(served, local, strict=True):
            assert hit["rank"] == row["rank"]
            assert abs(hit["score"] - row["score"]) < 1e-3

        away = {"search": {"folders": [str(outside)], "text": QUERY}}
        assert status_of(f"{url}/v1/predict", away) == 403
        bad = {"search": {"folders": [str(folder)], "text": QUERY, "k": 0}}
        assert status_of(f"{url}/v1/predict", bad) == 400
        extra = {"search": {"folders": [str(folder)], "text": QUERY, "colour": 1}}
        assert status_of(f"{url}/v1/predict", extra) == 400

        # the CLI asks the server first (same rows, nothing embedded through this side), and
        # searches here where the server refuses
        here = local_search(folder, tiny_model)
        with monkeypatch.context() as patched:
            patched.setattr(ServerBackend, "embed_images", refuse)
            assert local_search(folder, tiny_model, "--server", url) == here
        elsewhere = local_search(outside, tiny_model, "--server", url)
        assert [row["path"] for row in elsewhere] == [str(outside / "rocket.jpg")]

        # a whole `clipcls search --server` process: the fast path, without Typer or numpy;
        # where the server refuses, the full command line searches here
        quick = whole_search(folder, url)
        assert quick.stderr.splitlines()[-1] == "loaded:", quick.stderr
        assert [json.loads(line) for line in quick.stdout.splitlines()] == here
        refused = whole_search(outside, url)
        assert "typer" in refused.stderr.splitlines()[-1]
        assert [json.loads(line)["path"] for line in refused.stdout.splitlines()] == [
            str(outside / "rocket.jpg")
        ]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
