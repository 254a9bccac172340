"""An ONNX export served and on Ray, with torch made unimportable: `clipcls serve` answers as
the local run does, and a Ray run's actors write the local run's rows."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE_IMAGES

pytestmark = pytest.mark.slow
POISONED = ("torch", "torchvision", "open_clip")


@pytest.fixture
def no_torch(tmp_path: Path) -> dict[str, str]:
    """An environment where importing torch, torchvision or open_clip fails loudly."""
    poison = tmp_path / "poison"
    for name in POISONED:
        (poison / name).mkdir(parents=True)
        (poison / name / "__init__.py").write_text(
            f"raise ImportError('{name} imported where an ONNX export runs')\n"
        )
    path = os.pathsep.join([str(poison), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "RAY_ADDRESS": ""}


def clipcls(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "clipcls", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done


def by_path(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as stream:
        return {row["path"]: row for row in csv.DictReader(stream)}


def same_rows(got: Path, want: Path) -> None:
    ours, theirs = by_path(got), by_path(want)
    assert ours.keys() == theirs.keys() and ours
    for path, row in ours.items():
        assert row["label"] == theirs[path]["label"]
        assert float(row["probability"]) == pytest.approx(
            float(theirs[path]["probability"]), abs=1e-5
        )


def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "china.jpg"):
        (folder / name).write_bytes((SAMPLE_IMAGES / name).read_bytes())
    return folder


def test_the_torch_poison_works(no_torch: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import open_clip"], env=no_torch, capture_output=True, text=True
    )
    assert done.returncode != 0 and "imported where an ONNX export runs" in done.stderr


def test_ray_runs_an_export_without_torch(
    onnx_tiny_dir: Path, tmp_path: Path, no_torch: dict[str, str]
) -> None:
    folder, model = photos(tmp_path), f"local-dir:{onnx_tiny_dir}"
    local, on_ray = tmp_path / "local.csv", tmp_path / "ray.csv"
    labels = ("--labels", "cat,coffee,rocket", "--model", model)
    clipcls(no_torch, "label", str(folder), *labels, "-o", str(local))
    env = {**no_torch, "CLIPCLS_CACHE_DIR": str(tmp_path / "ray-cache")}
    clipcls(env, "label", str(folder), *labels, "-o", str(on_ray), "--engine", "ray")
    same_rows(on_ray, local)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_runs_an_export_without_torch(
    onnx_tiny_dir: Path, tmp_path: Path, no_torch: dict[str, str]
) -> None:
    folder, model = photos(tmp_path), f"local-dir:{onnx_tiny_dir}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "clipcls", "serve", "--model", model, "--port", str(port)],
        env={**no_torch, "CLIPCLS_CACHE_DIR": str(tmp_path / "server-cache")},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180  # a hang guard, not a speed check
        while True:
            assert server.poll() is None, server.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the server never answered"
            probe = subprocess.run(
                [sys.executable, "-m", "clipcls", "label", str(folder / "chelsea.png")]
                + ["--labels", "a,b", "--server", url, "-o", str(tmp_path / "probe.csv")],
                env=no_torch,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if probe.returncode == 0:
                break
            time.sleep(1)
        local, served = tmp_path / "local.csv", tmp_path / "served.csv"
        labels = ("--labels", "cat,coffee,rocket")
        clipcls(no_torch, "label", str(folder), *labels, "--model", model, "-o", str(local))
        clipcls(no_torch, "label", str(folder), *labels, "--server", url, "-o", str(served))
        same_rows(served, local)
    finally:
        server.terminate()
        server.wait(timeout=60)
