"""`serve --support DIR`: examples embedded once at start, each request scored with those of its
own labels; and a `--server` client that brings its own --support."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clipcls.cli import app

pytest.importorskip("litserve")
pytestmark = pytest.mark.slow  # starts a clipcls server: run by .ci/run with -m slow
CLASSES = ("red", "green", "blue", "stripes", "checks")


def picture(name: str, rng: np.random.Generator) -> Image.Image:
    grid = np.indices((64, 64))
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    if name in colours:
        base = np.broadcast_to(np.array(colours[name], float), (64, 64, 3))
    else:
        on = (
            (grid[1] // 8) % 2 == 0
            if name == "stripes"
            else ((grid[0] // 8) + (grid[1] // 8)) % 2 == 0
        )
        base = np.repeat(np.where(on, 235.0, 20.0)[..., None], 3, axis=2)
    noisy = np.clip(base + rng.normal(0, 12, (64, 64, 3)), 0, 255)
    return Image.fromarray(noisy.astype(np.uint8))


def write_shots(root: Path) -> tuple[Path, Path]:
    support, unseen = root / "support", root / "unseen"
    for index, name in enumerate(CLASSES):
        (support / name).mkdir(parents=True)
        unseen.mkdir(exist_ok=True)
        rng = np.random.default_rng(index)
        for i in range(4):
            picture(name, rng).save(support / name / f"{name}_{i}.png")
        for i in range(6):
            picture(name, rng).save(unseen / f"{name}_{i}.png")
    return support, unseen


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def call(url: str, body: dict | None = None, timeout: float = 60) -> dict:  # type: ignore[type-arg]
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return dict(json.loads(answer.read()))


def wait_for_info(server: subprocess.Popen, url: str) -> dict:  # type: ignore[type-arg]
    """The facts of a `clipcls serve` started as server, once it answers (within 120 s)."""
    deadline = time.monotonic() + 120
    while True:
        assert server.poll() is None and time.monotonic() < deadline
        try:
            return call(f"{url}/v1/info")
        except (OSError, urllib.error.HTTPError):  # not listening yet, or 503 while loading
            time.sleep(0.2)


def test_served_support_answers_requests_with_their_labels_examples(
    tiny_model: str, tmp_path: Path
) -> None:
    support, unseen = write_shots(tmp_path)
    (support / "purple").mkdir()  # a label no request names here: said, and never used
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "clipcls", "serve", "--model", tiny_model]
    server = subprocess.Popen(
        [*command, "--port", str(port), "--support", str(support)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        facts = wait_for_info(server, url)
        assert facts["support"]["examples"] == dict.fromkeys(CLASSES, 4)
        files = sorted(unseen.iterdir())
        images = [
            {"name": p.name, "data": base64.b64encode(p.read_bytes()).decode()} for p in files
        ]
        answer = call(f"{url}/v1/predict", {"images": images, "labels": list(CLASSES)})
        got = [r["predictions"][0]["label"] for r in answer["predictions"]]
        right = [p.name.split("_")[0] == label for p, label in zip(files, got, strict=True)]
        assert sum(right) / len(right) >= 0.9
        # a request with two of the labels: only their examples vote
        pair = call(f"{url}/v1/predict", {"images": images[:6], "labels": ["blue", "red"]})
        assert {r["predictions"][0]["label"] for r in pair["predictions"]} <= {"blue", "red"}
        # a client scores on its side: it brings its own support set, all of whose folders
        # must be its labels
        (support / "purple").rmdir()
        args = ["predict", str(unseen), "--labels", ",".join(CLASSES), "-f", "jsonl"]
        result = CliRunner().invoke(app, [*args, "--server", url, "--support", str(support)])
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        hits = [Path(r["path"]).name.split("_")[0] == r["predictions"][0]["label"] for r in rows]
        assert sum(hits) / len(hits) >= 0.9
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    said = server.stderr.read() if server.stderr else ""
    assert "support folder of purple holds no images" in said
    assert "support set: 20 examples of 5 labels" in said
