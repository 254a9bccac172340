"""`clipcls label` never destroys, mixes or doubles a file or a row: one test per case found by
trying to break it, and a kill -9 fuzz test over copy and move runs."""

import csv
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.cli.interrupts import Interrupted, InterruptGuard
from clipcls.labeling.sortfolder import Entry, SortFolder
from clipcls.labeling.sorting import SortMode, unique_destination
from clipcls.pathtext import path_to_text, text_to_path

runner = CliRunner()
LABELS = "cat,coffee,rocket"
PNG = (SAMPLE_IMAGES / "chelsea.png").read_bytes()


def label(model: str, *args: str, labels: str = LABELS):  # type: ignore[no-untyped-def]
    return runner.invoke(
        app, ["label", *args, "--model", model, "--templates", "photo", "--labels", labels]
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def command(model: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "clipcls", "label", *args, "--model", model]
    # (labels and templates follow in each test)


def digests(*folders: Path) -> Counter[str]:
    """The multiset of file contents under the folders, hidden files included."""
    found: Counter[str] = Counter()
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and path.name != ".clipcls-sort":
                found[hashlib.sha256(path.read_bytes()).hexdigest()] += 1
    return found


# Files


@pytest.mark.parametrize("mode", list(SortMode))
def test_placing_never_replaces_an_existing_file(tmp_path: Path, mode: SortMode) -> None:
    source, target = tmp_path / "new.png", tmp_path / "sorted" / "old.png"
    source.write_bytes(b"new")
    target.parent.mkdir()
    target.write_bytes(b"old")
    with SortFolder(target.parent) as folder, pytest.raises(FileExistsError):
        folder.place(str(source), Entry(".", target.name), mode)
    assert target.read_bytes() == b"old" and source.read_bytes() == b"new"
    assert target.read_bytes() == b"old" and source.read_bytes() == b"new"


def test_resumed_move_gives_a_newcomer_its_own_name_and_row(
    tiny_model: str, tmp_path: Path
) -> None:
    inbox, sorted_dir, out = tmp_path / "inbox", tmp_path / "sorted", tmp_path / "log.csv"
    inbox.mkdir()
    (inbox / "IMG_0001.png").write_bytes(PNG)
    (inbox / "IMG_0002.png").write_bytes(PNG + b"2")
    args = [str(inbox), "--sort-into", str(sorted_dir), "--mode", "move", "-o", str(out)]
    assert label(tiny_model, *args).exit_code == 0
    before = digests(sorted_dir)
    (inbox / "IMG_0001.png").write_bytes(PNG + b"newcomer")
    result = label(tiny_model, *args, "--resume")
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert len(rows) == 3
    assert len({r["destination"] for r in rows}) == 3
    assert digests(sorted_dir) == before + Counter([hashlib.sha256(PNG + b"newcomer").hexdigest()])
    assert not list(inbox.iterdir())


NON_UTF8 = os.fsdecode(b"caf\xe9 \xff.png")
LONG_NAME = "x" * 245 + ".png"  # 249 bytes: room for no temporary suffix
CJK_LABEL = "猫" * 120  # a 360-byte folder name


@pytest.mark.parametrize("mode", ["move", "copy"])
def test_resume_never_gets_stuck_on_odd_names_or_long_labels(
    tiny_model: str, tmp_path: Path, mode: str
) -> None:
    inbox, sorted_dir, out = tmp_path / "inbox", tmp_path / "sorted", tmp_path / "log.csv"
    inbox.mkdir()
    for name in (NON_UTF8, LONG_NAME):
        (inbox / name).write_bytes(PNG)
    args = [str(inbox), "--sort-into", str(sorted_dir), "--mode", mode, "-o", str(out)]
    first = label(tiny_model, *args, labels=CJK_LABEL + ",dog")
    assert first.exit_code == 0, first.output
    rows = read_csv(out)
    assert sorted(text_to_path(r["path"]) for r in rows) == sorted(
        str(inbox / n) for n in (NON_UTF8, LONG_NAME)
    )
    # A kill between a row and its move: put the files back where they were.
    for row in rows:
        destination = Path(text_to_path(row["destination"]))
        assert len(os.fsencode(destination.name)) <= 255
        assert len(os.fsencode(destination.parent.name)) <= 255
        if mode == "move":
            os.rename(destination, text_to_path(row["path"]))
        else:
            destination.unlink()
    (inbox / "late.png").write_bytes(PNG + b"late")
    for _ in range(2):
        again = label(tiny_model, *args, "--resume", labels=CJK_LABEL + ",dog")
        assert again.exit_code == 0, again.output
    assert len(read_csv(out)) == 3
    assert sum(1 for p in sorted_dir.rglob("*") if p.is_file()) == 3 + 1  # and the marker
    assert (not list(inbox.iterdir())) == (mode == "move")


@given(st.binary(min_size=1, max_size=40))
def test_paths_in_outputs_map_back_to_their_bytes(name: bytes) -> None:
    path = os.fsdecode(name.replace(b"/", b"_").replace(b"\x00", b"_"))
    text = path_to_text(path)
    text.encode("utf-8")  # valid UTF-8, whatever the bytes
    assert text_to_path(text) == path


def test_names_are_cut_to_the_byte_limit_keeping_the_extension(tmp_path: Path) -> None:
    (tmp_path / LONG_NAME).write_bytes(b"")
    unique = unique_destination(tmp_path, LONG_NAME)
    assert unique.suffix == ".png" and len(os.fsencode(unique.name)) <= 255 - 17
    cjk = "猫" * 100 + ".jpg"
    assert len(os.fsencode(unique_destination(tmp_path, cjk).name)) <= 255 - 17


def test_sorted_folders_inside_the_input_are_not_labeled_again(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "labels.csv"
    args = [str(photos), "-o", str(out), "--sort-into", str(photos / "sorted")]
    assert label(tiny_model, *args).exit_code == 0
    assert label(tiny_model, *args, "--overwrite").exit_code == 0
    assert len(read_csv(out)) == 4
    assert (
        sum(1 for p in (photos / "sorted").rglob("*.png") if p.is_file())
        + sum(1 for p in (photos / "sorted").rglob("*.jpg"))
        == 4
    )  # the second run found its copies in place
    plain = label(tiny_model, str(photos), "-o", str(tmp_path / "again.csv"))
    assert plain.exit_code == 0
    assert len(read_csv(tmp_path / "again.csv")) == 4
    assert "skipping" in plain.stderr and "sorted" in plain.stderr


def test_resumed_dry_run_plans_what_an_uninterrupted_one_does(
    tiny_model: str, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    for sub in "abcd":
        (inbox / sub).mkdir(parents=True)
        (inbox / sub / "same.png").write_bytes(PNG)
    full, cut = tmp_path / "full.csv", tmp_path / "cut.csv"
    args = ["--sort-into", str(tmp_path / "s"), "--mode", "move", "--dry-run"]
    assert label(tiny_model, str(inbox), "-o", str(full), *args).exit_code == 0
    lines = full.read_bytes().splitlines(keepends=True)
    assert label(tiny_model, str(inbox), "-o", str(cut), *args).exit_code == 0
    cut.write_bytes(b"".join(lines[:3]))
    assert label(tiny_model, str(inbox), "-o", str(cut), *args, "--resume").exit_code == 0
    planned = [r["planned_destination"] for r in read_csv(cut)]
    assert planned == [r["planned_destination"] for r in read_csv(full)]
    assert len(set(planned)) == 4


def test_a_moved_relative_link_still_points_at_its_target(tiny_model: str, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "real.png").write_bytes(PNG)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.symlink("../elsewhere/real.png", inbox / "link.png")
    out = tmp_path / "l.csv"
    args = [str(inbox), "-o", str(out), "--sort-into", str(tmp_path / "s"), "--mode", "move"]
    assert label(tiny_model, *args).exit_code == 0
    moved = Path(read_csv(out)[0]["destination"])
    assert moved.is_symlink() and moved.read_bytes() == PNG
    assert os.path.isabs(os.readlink(moved))


# Rows


def test_resume_with_another_setup_is_refused_before_the_model_loads(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "labels.csv"
    assert label(tiny_model, str(photos), "-o", str(out)).exit_code == 0
    before = out.read_bytes()
    cases = {
        "labels was 'cat,coffee,rocket', now 'cat,dog'": ("--labels", "cat,dog"),
        "templates was": ("--template", "a {}."),
        "--threshold was 'none', now '0.5'": ("--threshold", "0.5"),
    }
    for message, extra in cases.items():
        args = ["label", str(photos), "-o", str(out), "--resume", "--model", "local-dir:/nowhere"]
        if extra[0] != "--labels":
            args += ["--labels", LABELS]
        if extra[0] != "--template":
            args += ["--templates", "photo"]
        refused = runner.invoke(app, [*args, *extra])
        assert refused.exit_code == 2, refused.output
        assert message in refused.stderr and "--overwrite" in refused.stderr
        assert refused.stderr.count("\n") == 1
    assert out.read_bytes() == before


def test_the_same_model_spelled_another_way_resumes(
    tiny_model: str, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = Path(tiny_model.removeprefix("local-dir:"))
    monkeypatch.chdir(folder.parent)
    out = tmp_path / "labels.csv"
    assert label(f"local-dir:./{folder.name}", str(photos), "-o", str(out)).exit_code == 0
    resumed = label(f"local-dir:{folder}/", str(photos), "-o", str(out), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "nothing left to label" in resumed.stderr


def test_resume_keys_are_the_files_not_their_spelling(
    tiny_model: str, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(photos.parent)
    out = tmp_path / "labels.csv"
    assert label(tiny_model, "photos", "-o", str(out)).exit_code == 0
    resumed = label(tiny_model, f"{photos}/", "-o", str(out), "--resume")
    assert resumed.exit_code == 0 and "nothing left to label" in resumed.stderr
    monkeypatch.chdir(tmp_path / "photos")
    again = label(tiny_model, ".", "-o", str(out), "--resume")
    assert again.exit_code == 0 and "nothing left to label" in again.stderr
    assert len(read_csv(out)) == 4


FOREIGN = {
    "theirs.csv": b"name,value\nalpha,1\nbeta,2\ngamma,3\ndelta,4\nepsilon,5\nzeta,6\n",
    "theirs.jsonl": b'{"id": 1}\n{"id": 2}\n',
    "binary.csv": bytes(range(256)) * 4,
}


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_resume_on_a_foreign_file_changes_nothing(
    tiny_model: str, photos: Path, tmp_path: Path, name: str
) -> None:
    out = tmp_path / name
    out.write_bytes(FOREIGN[name])
    refused = label(tiny_model, str(photos), "-o", str(out), "--resume")
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1, refused.output
    assert out.read_bytes() == FOREIGN[name]
    assert not Path(f"{out}.clipcls.json").exists()


def test_special_files_are_refused_as_outputs(tiny_model: str, photos: Path) -> None:
    for device in ("/dev/full", "/dev/zero"):  # refused from fstat, before a byte is read
        refused = label(tiny_model, str(photos), "-o", device, "-f", "csv", "--resume")
        assert refused.exit_code == 2 and "not a regular file" in refused.stderr


def test_stop_signals_wait_for_a_critical_section_and_keep_their_exit_code() -> None:
    guard = InterruptGuard()
    with guard.installed(), pytest.raises(Interrupted) as stopped:
        with guard.section():
            os.kill(os.getpid(), signal.SIGHUP)
            finished = True
    assert finished and stopped.value.exit_code == 129


def many_images(folder: Path, count: int, size: tuple[int, int] = (900, 700)) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.effect_noise(size, 40 + i).convert("RGB").save(folder / f"{i:03d}.jpg")


@pytest.mark.slow
def test_one_writer_per_output_and_sigterm_stops_like_ctrl_c(
    tiny_model: str, tmp_path: Path
) -> None:
    many_images(tmp_path / "many", 60)
    out = tmp_path / "labels.csv"
    args = [str(tmp_path / "many"), "-o", str(out), "--labels", LABELS, "--batch-size", "1"]
    first = subprocess.Popen(
        [*command(tiny_model, *args), "--templates", "photo"], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 3):
        time.sleep(0.02)
    try:
        second = label(tiny_model, *args, "--resume")
        assert second.exit_code == 2, second.output
        assert f"pid {first.pid}" in second.stderr and "in use" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=60)
    assert first.returncode == 143, stderr
    assert "--resume" in stderr and "holds only complete rows" in stderr
    rows = read_csv(out)
    assert 2 <= len(rows) < 60 and len({r["path"] for r in rows}) == len(rows)


# Proof: kill -9 anywhere, resume, and nothing is lost, doubled or mixed.


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["copy", "move"])
def test_kill_9_at_random_points_then_resume_loses_and_doubles_nothing(
    tiny_model: str, tmp_path: Path, mode: str
) -> None:
    reference = tmp_path / "reference"
    many_images(reference / "inbox", 14, (640, 480))
    want_rows = tmp_path / "want.csv"
    assert label(tiny_model, str(reference / "inbox"), "-o", str(want_rows)).exit_code == 0
    want = {Path(r["path"]).name: r["label"] for r in read_csv(want_rows)}
    chance = random.Random(f"kill-{mode}")
    for trial in range(2):
        inbox, target = tmp_path / f"inbox{trial}", tmp_path / f"sorted{trial}"
        inbox.mkdir()
        for image in (reference / "inbox").iterdir():
            (inbox / image.name).write_bytes(image.read_bytes())
        before = digests(inbox)
        out = tmp_path / f"out{trial}.csv"
        args = [str(inbox), "-o", str(out), "--sort-into", str(target), "--mode", mode]
        args += ["--labels", LABELS, "--templates", "photo", "--batch-size", "1", "-q"]
        for _ in range(2):  # two kills, each at a random point once rows flow
            process = subprocess.Popen([*command(tiny_model, *args), "--resume"])
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (out.exists() and out.stat().st_size):
                time.sleep(0.005)
            time.sleep(chance.uniform(0, 0.4))
            process.kill()
            process.wait()
        finished = subprocess.run([*command(tiny_model, *args), "--resume"], timeout=120)
        assert finished.returncode == 0
        rows = read_csv(out)
        assert sorted(Path(r["path"]).name for r in rows) == sorted(want)
        assert {Path(r["path"]).name: r["label"] for r in rows} == want
        if mode == "move":
            assert digests(inbox, target) == before and not list(inbox.iterdir())
        else:
            assert digests(inbox) == before and digests(target) == before
        assert not [p for p in target.rglob("*partial*")]
