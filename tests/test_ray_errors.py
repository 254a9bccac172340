"""`--engine ray` when things go wrong: an address that answers nothing, an actor killed mid-run,
and error rows that name files as the user gave them, as the local engine's do."""

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from clipcls.cli import app

pytestmark = pytest.mark.slow  # starts a Ray cluster: run by .ci/run with -m slow

ray = pytest.importorskip("ray")
runner = CliRunner()
LABELS = "cat,coffee,rocket"


def rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as stream:
        return {r["path"]: r for r in csv.DictReader(stream)}


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def command(model: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "clipcls", "label", *args, "--model", model, "-t", "photo"]


@pytest.mark.parametrize("how", ["option", "environment"])
def test_an_address_that_answers_nothing_is_one_line_fast(
    tiny_model: str, photos: Path, tmp_path: Path, how: str
) -> None:
    address = f"127.0.0.1:{closed_port()}"
    out = tmp_path / "out.csv"
    args = [str(photos), "-o", str(out), "--labels", LABELS, "--engine", "ray"]
    environment = {**os.environ, "RAY_ADDRESS": address} if how == "environment" else None
    args += ["--ray-address", address] if how == "option" else []
    done = subprocess.run(  # timeout: the hang guard (how fast it answers is not a test's claim)
        command(tiny_model, *args), capture_output=True, text=True, timeout=120, env=environment
    )
    assert done.returncode == 1 and done.stdout == "", done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and address in lines[0], lines
    assert not out.exists()


def test_error_rows_name_files_as_given_like_the_local_engine(
    tiny_model: str, photos: Path, tmp_path: Path, cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (photos / "broken.png").write_bytes(b"not an image")
    (photos / "tiny.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    monkeypatch.chdir(photos.parent)
    local, on_ray = tmp_path / "local.csv", tmp_path / "ray.csv"
    base = ["label", "photos", "--model", tiny_model, "-t", "photo", "--labels", LABELS, "-q"]
    assert runner.invoke(app, [*base, "-o", str(local)]).exit_code == 0
    result = runner.invoke(
        app, [*base, "-o", str(on_ray), "--engine", "ray", "--ray-address", cluster]
    )
    assert result.exit_code == 0, result.output
    want, got = rows(local), rows(on_ray)
    assert set(got) == set(want)
    for name in ("photos/broken.png", "photos/tiny.png"):
        assert got[name]["error"] == want[name]["error"] != ""
        assert str(tmp_path) not in got[name]["error"]


def actor_pids() -> list[int]:
    """The processes of Ray actors that embed (Ray titles them after the mapped class)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"MapWorker" in title and b"Embedder" in title:
                found.append(int(entry.name))
    return found


def test_a_killed_actor_is_one_error_line_with_the_resume_hint(
    tiny_model: str, tmp_path: Path, cluster: str
) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out.csv"
    inbox.mkdir()
    for i in range(300):
        Image.effect_noise((320, 240), 20 + i % 50).convert("RGB").save(inbox / f"{i:03d}.jpg")
    args = [str(inbox), "-o", str(out), "--labels", LABELS, "--engine", "ray", "--batch-size", "1"]
    process = subprocess.Popen(
        command(tiny_model, *args, "--ray-address", cluster, "-q"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (out.exists() and out.read_text().count("\n") > 3):
        time.sleep(0.05)
    killed = actor_pids()
    assert killed, "no scoring actor found"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=240)
    assert stdout == ""  # Ray's own `(raylet) A worker died ...` is not a result
    lines = stderr.strip().splitlines()
    assert process.returncode == 1, stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--resume" in lines[0], stderr
    done = rows(out)
    assert 3 <= len(done) < 300
