"""SIGTERM and Ctrl-C at any point of a sorting run: the way out is never broken by a second
one, never ends in a traceback, an interrupted dedupe's output lists what moved, and a rerun
(or --resume) leaves every file once: the md5 multiset of the tree is what it was."""

import csv
import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES, jsonl
from PIL import Image
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.cli.interrupts import Interrupted, InterruptGuard
from clipcls.labeling.sortfolder import SortFolder
from clipcls.search import dedupe_sort
from clipcls.search.dedupe_sort import Placement

THRESHOLD = "0.99"  # the tiny random model's copies (tests/test_dedupe.py says why)


def test_a_second_signal_never_breaks_the_way_out_of_the_first() -> None:
    guard, finished, broken = InterruptGuard(), False, False
    with guard.installed():
        try:
            os.kill(os.getpid(), signal.SIGHUP)
        except Interrupted as first:
            assert first.exit_code == 129
            try:
                os.kill(os.getpid(), signal.SIGTERM)  # impatient: while the rows are being kept
                finished = True
            except Interrupted:
                broken = True  # (caught here: pytest would take it for a Ctrl-C of its own)
    assert finished and not broken


def python(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


RUN_MAIN = """
import sys
from clipcls.cli import main
sys.argv = ["clipcls", *sys.argv[1:]]
main()
"""


def test_ctrl_c_while_the_commands_load_is_one_line() -> None:
    done = python(
        textwrap.dedent(
            """
        import os, signal, sys
        class CtrlC:  # Ctrl-C lands while the commands' modules are imported
            def find_spec(self, name, path=None, target=None):
                if name == "clipcls.cli.commands":
                    os.kill(os.getpid(), signal.SIGINT)
                return None
        sys.meta_path.insert(0, CtrlC())
        """
        )
        + RUN_MAIN,
        "templates",
    )
    assert (done.returncode, done.stderr, done.stdout) == (130, "interrupted\n", "")


def test_ctrl_c_during_the_exit_handlers_ends_quietly() -> None:
    done = python(
        textwrap.dedent(
            """
        import atexit, os, signal
        atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))  # as torch's run
        """
        )
        + RUN_MAIN,
        "templates",
    )
    assert done.returncode == 130 and done.stderr == "", done.stderr
    assert "simple" in done.stdout  # the command's output was written before


def copies_of_one_photo(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    small = Image.open(SAMPLE_IMAGES / "chelsea.png").convert("RGB").resize((48, 32))
    small.save(folder / "0000.png")
    for i in range(1, count):
        (folder / f"{i:04d}.png").write_bytes((folder / "0000.png").read_bytes())


def test_dedupe_stopped_between_moves_lists_the_files_it_moved(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, dupes, out = tmp_path / "inbox", tmp_path / "dupes", tmp_path / "out.jsonl"
    copies_of_one_photo(inbox, 8)
    place = dedupe_sort._apply
    calls = []

    def placed(folder: SortFolder, placement: Placement, mode: dedupe_sort.SortMode) -> None:
        place(folder, placement, mode)
        calls.append(placement)
        if len(calls) == 3:  # Ctrl-C during the third move: it finishes first
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(dedupe_sort, "_apply", placed)
    args = ["dedupe", str(inbox), "--sort-into", str(dupes), "--mode", "move", "-o", str(out)]
    args += ["--threshold", THRESHOLD, "--model", tiny_model, "--precision", "fp32"]
    stopped = CliRunner().invoke(app, args)
    assert stopped.exit_code == 130, stopped.output
    assert "interrupted:" in stopped.stderr and "moved 3 files into" in stopped.stderr
    rows = jsonl(out.read_text())
    assert len(rows) == 8  # the whole group, as found
    moved = [r for r in rows if r["destination"]]
    assert len(moved) == 3
    for row in rows:
        where = row["destination"] or row["path"]
        assert os.path.isfile(where) and (not row["destination"] or not os.path.exists(row["path"]))
    monkeypatch.setattr(dedupe_sort, "_apply", place)
    again = CliRunner().invoke(app, [*args, "--overwrite"])
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in inbox.iterdir()) == ["0000.png"]
    assert len(list(dupes.glob("*.png"))) == 7


# The attack: random points, both signals, sometimes twice, then a rerun or --resume.


def multiset(root: Path) -> Counter[str]:
    """The md5 of every image file under root (outputs, markers and sidecars left out)."""
    return Counter(
        hashlib.md5(path.read_bytes()).hexdigest()
        for path in root.rglob("*.png")
        if not path.name.startswith(".")
    )


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "clipcls", *args]


def stop_at_random(
    cmd: list[str], chance: random.Random, progress: Callable[[], int], env: dict[str, str]
) -> tuple[int, str]:
    """Run cmd and stop it: at a random moment of its start-up, or soon after progress()
    changes (rows written, files moved); a second signal, sometimes. (exit status, stderr)"""
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    first = chance.choice([signal.SIGTERM, signal.SIGINT])
    if chance.random() < 0.25:
        time.sleep(chance.uniform(0, 4))
    else:
        was, deadline = progress(), time.monotonic() + 120
        while process.poll() is None and progress() == was:
            assert time.monotonic() < deadline
            time.sleep(0.0005)
        time.sleep(chance.uniform(0, 0.03))
    process.send_signal(first)
    if chance.random() < 0.3:
        time.sleep(chance.uniform(0, 0.02))
        if process.poll() is None:
            process.send_signal(chance.choice([signal.SIGTERM, signal.SIGINT]))
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr.decode(errors="replace")


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else -1


def entries(folder: Path) -> int:
    return len(os.listdir(folder)) if folder.exists() else -1


QUIET_ENDS = {0, 130, 143, -signal.SIGTERM, -signal.SIGINT}  # -N: before Python took over


def noise_images(folder: Path, count: int) -> None:
    (folder / "sub").mkdir(parents=True)
    for i in range(count):
        image = Image.effect_noise((32, 32), 10 + i).convert("RGB")
        image.save(folder / f"{i:03d}.png")
        if i % 5 == 0:  # the same name and bytes in another folder
            image.save(folder / "sub" / f"{i:03d}.png")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_label_move_stopped_at_random_points_then_resumed_keeps_every_file_once(
    tiny_model: str, tmp_path: Path, kind: str
) -> None:
    inbox, target, out = tmp_path / "inbox", tmp_path / "sorted", tmp_path / f"out.{kind}"
    noise_images(inbox, 150)
    before = multiset(tmp_path)
    cmd = command("label", str(inbox), "-o", str(out), "--sort-into", str(target))
    cmd += ["--mode", "move", "-l", "cat,dog,car", "--model", tiny_model, "--batch-size", "1"]
    cmd += ["-q", "--resume"]
    chance, env = random.Random(f"label-{kind}"), dict(os.environ)
    for _ in range(6):
        status, stderr = stop_at_random(cmd, chance, partial(size, out), env)
        assert status in QUIET_ENDS and "Traceback" not in stderr, stderr
        assert not before - multiset(tmp_path)  # never a file lost, even mid-run
    finished = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert multiset(tmp_path) == before
    assert not list(inbox.rglob("*.png"))
    if kind == "csv":
        rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    else:
        rows = jsonl(out.read_text(encoding="utf-8"))
    assert len(rows) == sum(before.values())
    assert len({r["path"] for r in rows}) == len({r["destination"] for r in rows}) == len(rows)
    assert all(Path(r["destination"]).is_file() for r in rows)


@pytest.mark.slow
def test_dedupe_move_stopped_at_random_points_then_rerun_keeps_every_file_once(
    tiny_model: str, tmp_path: Path
) -> None:
    inbox, dupes, out = tmp_path / "inbox", tmp_path / "dupes", tmp_path / "out.csv"
    copies_of_one_photo(inbox, 1200)
    before = multiset(tmp_path)
    find = command("dedupe", str(inbox), "--model", tiny_model, "--precision", "fp32", "-q")
    env = dict(os.environ)
    assert subprocess.run(find, capture_output=True, env=env).returncode == 0  # embedded
    cmd = [*find, "--threshold", THRESHOLD, "--sort-into", str(dupes), "-o", str(out)]
    cmd += ["--mode", "move", "--overwrite"]
    chance, said = random.Random("dedupe"), 0
    for _ in range(6):
        status, stderr = stop_at_random(cmd, chance, partial(entries, dupes), env)
        assert status in QUIET_ENDS and "Traceback" not in stderr, stderr
        assert not before - multiset(tmp_path)
        if status in (130, 143) and "interrupted:" in stderr:
            said += 1
            rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
            for row in rows:  # what the stopped run says it moved, it moved
                where = row["destination"] or row["path"]
                assert os.path.isfile(where), row
    finished = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert multiset(tmp_path) == before
    assert sorted(p.name for p in inbox.iterdir()) == ["0000.png"]
    assert sorted(p.name for p in dupes.glob("*.png")) == [f"{i:04d}.png" for i in range(1, 1200)]
