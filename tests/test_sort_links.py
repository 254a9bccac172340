"""`label --sort-into` and `dedupe --sort-into` never place a file outside the sort folder, nor
write through, remove or take for a copy a file outside it: links planted in the folder before a
run, or swapped in between a name's choice and its placing, are refused with a warning naming
the file, and nothing is lost."""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import itertools
import os
import shutil
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE_IMAGES
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.labeling import job, run
from clipcls.labeling.sortfolder import Entry, Refused, claim_sort_folder, locate
from clipcls.labeling.sorting import PARTIAL, SortMode
from clipcls.search import dedupe_sort

runner = CliRunner()
LABELS = "cat,coffee,rocket"
MODES = ["copy", "move", "symlink", "hardlink"]


def label(model: str, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(
        app, ["label", *args, "--model", model, "--templates", "photo", "--labels", LABELS]
    )


def sort_photos(model: str, photos: Path, out: Path, mode: str):  # type: ignore[no-untyped-def]
    """label photos into out, in that mode (its CSV beside out)."""
    csv = out.parent / "l.csv"
    return label(model, str(photos), "-o", str(csv), "--sort-into", str(out), "--mode", mode)


def dedupe(model: str, *args: str):  # type: ignore[no-untyped-def]
    flags = ["--threshold", "0.999", "--keep", "first", "-f", "csv", "-q", "--model", model]
    return runner.invoke(app, ["dedupe", *args, *flags])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def contents(*folders: Path) -> Counter[str]:
    """The bytes of every regular file under folders (links not followed): what must survive."""
    found: Counter[str] = Counter()
    for folder in folders:
        for path in folder.rglob("*"):
            if not path.is_symlink() and path.is_file() and not path.name.startswith("."):
                found[hashlib.sha256(path.read_bytes()).hexdigest()] += 1
    return found


def victim(tmp_path: Path) -> Path:
    """A folder outside the sort folder holding a file no run may touch."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "precious").write_bytes(b"precious")
    return folder


def untouched(folder: Path) -> bool:
    return os.listdir(folder) == ["precious"] and (folder / "precious").read_bytes() == b"precious"


def swap_for_link(folder: Path, target: Path, aside: Path) -> None:
    """Put a link to target in folder's place (the folder itself moved aside, if there)."""
    if folder.is_symlink():
        return
    if folder.exists():
        os.rename(folder, aside)
    os.symlink(target, folder)


# label --sort-into


@pytest.mark.parametrize("mode", MODES)
def test_a_label_folder_that_is_a_link_is_refused(
    tiny_model: str, photos: Path, tmp_path: Path, mode: str
) -> None:
    out, outside = tmp_path / "sorted", victim(tmp_path)
    out.mkdir()
    for name in LABELS.split(","):
        os.symlink(outside, out / name)
    before = contents(photos)
    done = sort_photos(tiny_model, photos, out, mode)
    assert done.exit_code == 0, done.output
    assert untouched(outside)
    assert contents(photos) == before  # a refused move leaves the file where it was
    assert "not placed at" in done.stderr and "chelsea.png" in done.stderr
    assert "4 files not " in done.stderr


@pytest.mark.parametrize("mode", MODES)
def test_a_label_folder_swapped_for_a_link_after_its_name_was_chosen(
    tiny_model: str, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    out, outside = tmp_path / "sorted", victim(tmp_path)
    chosen = job.unique_destination

    def then_swapped(folder: Path, *args: Any, **kwargs: Any) -> Path:
        name = chosen(folder, *args, **kwargs)
        swap_for_link(folder, outside, tmp_path / f"aside-{folder.name}")
        return name

    monkeypatch.setattr(job, "unique_destination", then_swapped)
    before = contents(photos)
    done = sort_photos(tiny_model, photos, out, mode)
    assert done.exit_code == 0, done.output
    assert untouched(outside)
    assert contents(photos) == before
    assert done.stderr.count("not placed at") == 4


@pytest.mark.parametrize("mode", MODES)
def test_the_sort_folder_swapped_for_a_link_after_it_was_claimed(
    tiny_model: str, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    out, outside = tmp_path / "sorted", victim(tmp_path)
    claim = run.claim_sort_folder

    def then_swapped(root: Path) -> Any:
        claimed = claim(root)
        swap_for_link(out, outside, tmp_path / "aside")
        return claimed

    monkeypatch.setattr(run, "claim_sort_folder", then_swapped)
    before = contents(photos)
    done = sort_photos(tiny_model, photos, out, mode)
    assert done.exit_code == 0, done.output
    assert untouched(outside)
    assert contents(photos) == before  # the names lead out of it now: each place refused
    assert done.stderr.count("not placed at") == 4


def test_a_copy_never_writes_through_a_link_at_its_hidden_name(
    tiny_model: str, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A link planted at the name a copy is written under, again right after it was removed:
    # the copy was written through it, over a file outside.
    out, outside = tmp_path / "sorted", victim(tmp_path)
    for name in LABELS.split(","):
        (out / name).mkdir(parents=True)
        for photo in os.listdir(photos):
            os.symlink(outside / "precious", out / name / f".{photo}{PARTIAL}")
    unlink = os.unlink

    def replanted(path: Any, *args: Any, **kwargs: Any) -> None:
        unlink(path, *args, **kwargs)
        if str(path).endswith(PARTIAL):
            os.symlink(outside / "precious", path, dir_fd=kwargs.get("dir_fd"))

    monkeypatch.setattr(os, "unlink", replanted)
    done = label(tiny_model, str(photos), "-o", str(tmp_path / "l.csv"), "--sort-into", str(out))
    monkeypatch.setattr(os, "unlink", unlink)
    assert done.exit_code == 0, done.output
    assert untouched(outside)
    assert done.stderr.count("not placed at") == 4


def test_a_copy_never_takes_a_link_for_the_copy(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    # A link to the input at the name its copy would get was used as "the copy": the input
    # deleted afterwards, the sorted folder held a dangling link.
    out = tmp_path / "sorted"
    for name in LABELS.split(","):
        (out / name).mkdir(parents=True)
        for photo in photos.iterdir():
            os.symlink(photo, out / name / photo.name)
    output = tmp_path / "l.csv"
    done = label(tiny_model, str(photos), "-o", str(output), "--sort-into", str(out))
    assert done.exit_code == 0, done.output
    for row in read_csv(output):
        copy = Path(row["destination"])
        assert not copy.is_symlink() and copy.read_bytes() == Path(row["path"]).read_bytes()


def test_a_resume_places_no_file_where_a_forged_row_says(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    out, outside, output = tmp_path / "sorted", victim(tmp_path), tmp_path / "l.csv"
    args = ["-o", str(output), "--sort-into", str(out), "--mode", "move"]
    assert label(tiny_model, str(photos), *args).exit_code == 0
    last = read_csv(output)[-1]
    os.rename(last["destination"], last["path"])  # a kill between the row and its move
    forged = output.read_text().replace(last["destination"], str(outside / "moved.png"))
    output.write_text(forged)
    done = label(tiny_model, str(photos), *args, "--resume")
    assert done.exit_code == 0, done.output
    assert untouched(outside) and os.path.exists(last["path"])
    assert "links are not followed" in done.stderr


def test_a_link_to_the_source_at_its_name_is_no_move_cut_short(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    # A move killed between its row and its placing, then a link to the source planted at the
    # name: taken for the move's second name, the source was removed, the link left dangling.
    out, output = tmp_path / "sorted", tmp_path / "l.csv"
    args = ["-o", str(output), "--sort-into", str(out), "--mode", "move"]
    assert label(tiny_model, str(photos), *args).exit_code == 0
    last = read_csv(output)[-1]
    os.rename(last["destination"], last["path"])
    os.symlink(last["path"], last["destination"])
    before = contents(photos, out)
    done = label(tiny_model, str(photos), *args, "--resume")
    assert done.exit_code == 0, done.output
    assert os.path.isfile(last["path"]) and contents(photos, out) == before


def test_a_sort_folder_marker_that_is_a_link_is_refused(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    out, outside = tmp_path / "sorted", victim(tmp_path)
    out.mkdir()
    os.symlink(outside / "made", out / ".clipcls-sort")
    done = label(tiny_model, str(photos), "-o", str(tmp_path / "l.csv"), "--sort-into", str(out))
    assert done.exit_code == 2 and "cannot sort into" in done.stderr
    assert untouched(outside)


def test_a_label_folder_renamed_away_gets_no_more_files(tmp_path: Path) -> None:
    # The folder held open is the sort folder; a label folder is opened beneath it for each
    # step, so one renamed out of it since is not written to.
    source, out = tmp_path / "a.png", tmp_path / "sorted"
    source.write_bytes(b"image")
    with claim_sort_folder(out) as folder:
        folder.put(str(source), Entry("cat", "a.png"), SortMode.COPY)
        os.rename(out / "cat", tmp_path / "away")
        folder.put(str(source), Entry("cat", "a.png"), SortMode.COPY)
        os.symlink(tmp_path / "away", out / "dog")
        with pytest.raises(Refused):
            folder.put(str(source), Entry("dog", "a.png"), SortMode.COPY)
    assert os.listdir(tmp_path / "away") == ["a.png"]
    assert (out / "cat" / "a.png").read_bytes() == b"image"


@pytest.mark.parametrize("failure", [errno.EXDEV, errno.EPERM])
def test_a_move_without_a_hard_link_still_never_replaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: int
) -> None:
    # Across file systems a move copies, then removes the source; where there are no hard
    # links it renames, after checking the name is free.
    link = os.link

    def no_link(*args: Any, **kwargs: Any) -> None:
        if failure == errno.EXDEV and kwargs.get("src_dir_fd") == kwargs.get("dst_dir_fd"):
            return link(*args, **kwargs)  # within the sort folder: one file system
        raise OSError(failure, os.strerror(failure))

    source = tmp_path / "in.png"
    source.write_bytes(b"image")
    os.utime(source, (1_000_000, 1_000_000))
    out = tmp_path / "sorted"
    (out / "cat").mkdir(parents=True)
    (out / "cat" / "taken.png").write_bytes(b"other")
    monkeypatch.setattr(os, "link", no_link)
    with claim_sort_folder(out) as folder:
        with pytest.raises(FileExistsError):  # placed without looking first: _link checks
            folder.place(str(source), Entry("cat", "taken.png"), SortMode.MOVE)
        folder.put(str(source), Entry("cat", "in.png"), SortMode.MOVE)
    assert (out / "cat" / "taken.png").read_bytes() == b"other"
    assert (out / "cat" / "in.png").read_bytes() == b"image" and not source.exists()
    assert (out / "cat" / "in.png").stat().st_mtime == 1_000_000
    assert sorted(os.listdir(out / "cat")) == ["in.png", "taken.png"]  # no hidden copy left


def test_a_sort_folder_given_as_a_link_is_followed_once(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    # The folder the user names may be a link (to another disk, say): it is followed when the
    # run claims it, and every file goes beneath the folder it led to.
    real, given, output = tmp_path / "real", tmp_path / "given", tmp_path / "l.csv"
    real.mkdir()
    given.symlink_to(real)
    done = label(tiny_model, str(photos), "-o", str(output), "--sort-into", str(given))
    assert done.exit_code == 0, done.output
    assert "not placed" not in done.stderr
    assert sorted(p.name for p in real.rglob("*.*") if p.parent != real) == sorted(
        os.listdir(photos)
    )
    assert all(Path(row["destination"]).parent.parent == given for row in read_csv(output))


def test_a_link_swapped_while_a_place_is_resolved_is_no_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # realpath reads a link it saw a moment before: swapped back meanwhile, it raised EINVAL,
    # which stopped a whole label run.
    def swapped(path: Any, **kwargs: Any) -> str:
        raise OSError(errno.EINVAL, "Invalid argument", path)

    monkeypatch.setattr(os.path, "realpath", swapped)
    assert locate("/sorted", "/sorted/cat/a.png") is None


# dedupe --sort-into


def twins(tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        shutil.copy(SAMPLE_IMAGES / "chelsea.png", photos / name)
    return photos


def test_dedupe_never_removes_a_source_for_a_link_to_it(tiny_model: str, tmp_path: Path) -> None:
    # dupes/b.png -> photos/b.png was taken for a move cut short: b.png was removed and the
    # folder of duplicates held only a dangling link.
    photos, out = twins(tmp_path), tmp_path / "dupes"
    out.mkdir()
    os.symlink(photos / "b.png", out / "b.png")
    before = contents(photos)
    done = dedupe(tiny_model, str(photos), "--sort-into", str(out), "--mode", "move")
    assert done.exit_code == 0, done.output
    assert contents(photos, out) == before


@pytest.mark.parametrize("mode", MODES)
def test_dedupe_sort_folder_swapped_for_a_link_after_it_was_claimed(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    photos, out, outside = twins(tmp_path), tmp_path / "dupes", victim(tmp_path)
    claim = dedupe_sort.claim_sort_folder

    def then_swapped(root: Path) -> Any:
        claimed = claim(root)
        swap_for_link(out, outside, tmp_path / "aside")
        return claimed

    monkeypatch.setattr(dedupe_sort, "claim_sort_folder", then_swapped)
    before = contents(photos)
    done = dedupe(tiny_model, str(photos), "--sort-into", str(out), "--mode", mode)
    assert done.exit_code == 0, done.output
    assert untouched(outside)
    # placed in the folder claimed, wherever it is now: b.png and c.png (links not counted)
    after = contents(photos, tmp_path / "aside")
    assert set(after) == set(before)
    assert sum(after.values()) == 3 + 2 * (mode in ("copy", "hardlink"))


# a racing process


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["move", "copy"])
def test_a_label_folder_flipped_to_a_link_and_back_while_files_are_sorted(
    tiny_model: str, tmp_path: Path, mode: str
) -> None:
    photos, out, outside = tmp_path / "photos", tmp_path / "sorted", victim(tmp_path)
    photos.mkdir()
    for number in range(60):
        image = ("chelsea.png", "coffee.png", "rocket.jpg")[number % 3]
        (photos / f"{number}-{image}").write_bytes((SAMPLE_IMAGES / image).read_bytes())
    before = contents(photos)
    stop, flips = threading.Event(), itertools.count()

    def flip() -> None:
        """Each label folder in turn: moved aside for a link out, then the link removed and
        the folder put back (where the run has not made a new one meanwhile)."""
        while not stop.is_set() and next(flips) < 100_000:
            for name in LABELS.split(","):
                folder = out / name
                with contextlib.suppress(OSError):
                    if folder.is_symlink():
                        os.unlink(folder)
                        os.rename(max((tmp_path / "aside").glob(f"{name}-*")), folder)
                    elif folder.is_dir():
                        os.rename(folder, tmp_path / "aside" / f"{name}-{next(flips):06d}")
                        os.symlink(outside, folder)

    out.mkdir()
    (tmp_path / "aside").mkdir()
    racer = threading.Thread(target=flip)
    racer.start()
    try:
        args = ["-o", str(tmp_path / "l.csv"), "--sort-into", str(out), "--mode", mode]
        done = label(tiny_model, str(photos), *args, "--batch-size", "1")
    finally:
        stop.set()
        racer.join()
    assert done.exit_code == 0, done.output
    assert untouched(outside)
    assert next(flips) > 1
    placed = contents(out, tmp_path / "aside")
    if mode == "move":  # each file moved, or refused and where it was
        assert contents(photos) + placed == before
    else:
        assert contents(photos) == before and not placed - before  # copies of inputs only
