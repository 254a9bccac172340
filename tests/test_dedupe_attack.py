"""`clipcls dedupe` under attack: byte-identical copies at --threshold 1, a kept image that is a
link to another member, and a second run sorting into the same folder meanwhile; every file
checked where it ends up, not only the rows."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_IMAGES
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.search import dedupe_sort
from clipcls.search.dedupe import KeepRule, duplicate_groups

runner = CliRunner()


def run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


def digests(*folders: Path) -> list[str]:
    """The content of every file in folders (links followed), sorted: what must survive."""
    found = []
    for folder in folders:
        for path in folder.iterdir():
            if path.is_file() and not path.name.startswith("."):
                found.append(hashlib.sha256(path.read_bytes()).hexdigest())
    return sorted(found)


def test_threshold_one_groups_every_byte_identical_copy(tiny_model: str, photos: Path) -> None:
    for image in list(photos.iterdir()):
        shutil.copy(image, photos / f"copy-{image.name}")
    done = run("dedupe", str(photos), "--threshold", "1", "--model", tiny_model, "-f", "csv", "-q")
    assert done.exit_code == 0, done.output
    rows = [line.split(",") for line in done.stdout.splitlines()[1:]]
    assert len(rows) == 8 and {row[0] for row in rows} == {"1", "2", "3", "4"}
    assert all(float(row[2]) > 0.999 for row in rows)  # a copy's cosine to its original


@pytest.mark.parametrize("exact", [True, False])
def test_float16_rows_of_one_image_are_at_cosine_one(exact: bool) -> None:
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(200, 64))  # 400 rows: LSH is used at threshold 1 (exact=False)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    matrix = np.repeat(rows, 2, axis=0).astype(np.float16)  # each image twice, 1 +- 5e-4 long
    paths = [f"{i}.png" for i in range(len(matrix))]
    groups = duplicate_groups(paths, matrix, 1.0, KeepRule.FIRST, exact=exact)
    assert [[m.path for m in g.members] for g in groups] == [
        [paths[i], paths[i + 1]] for i in range(0, len(paths), 2)
    ]
    assert all(member.score > 0.999 for group in groups for member in group.members)


def test_the_kept_file_under_another_name_stays(tiny_model: str, tmp_path: Path) -> None:
    # --keep first keeps a.png, a link to b.png: moving b.png out would leave the one image
    # kept a dangling link; d.png, another link to it, is no copy either
    photos, out = tmp_path / "photos", tmp_path / "dupes"
    photos.mkdir()
    shutil.copy(SAMPLE_IMAGES / "chelsea.png", photos / "b.png")
    os.symlink("b.png", photos / "a.png")
    shutil.copy(SAMPLE_IMAGES / "chelsea.png", photos / "c.png")  # a copy: it moves
    os.symlink(photos / "b.png", photos / "d.png")
    args = ["dedupe", str(photos), "--threshold", "0.999", "--keep", "first", "-f", "csv", "-q"]
    done = run(*args, "--model", tiny_model, "--sort-into", str(out), "--mode", "move")
    assert done.exit_code == 0, done.output
    assert sorted(os.listdir(photos)) == ["a.png", "b.png", "d.png"]
    assert (photos / "a.png").read_bytes() == (SAMPLE_IMAGES / "chelsea.png").read_bytes()
    assert sorted(os.listdir(out)) == [".clipcls-sort", "c.png"]
    rows = {line.split(",")[1]: line.split(",")[4] for line in done.stdout.splitlines()[1:]}
    assert rows[str(photos / "b.png")] == ""  # stays: no destination


def test_names_are_chosen_once_no_other_run_sorts_into_the_folder(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another dedupe into the same folder, finished between this run's plan and its lock,
    # took the name this run would have planned: this run must not report (or skip) a move
    # to a name holding the other run's file.
    mine, theirs, out = tmp_path / "mine", tmp_path / "theirs", tmp_path / "dupes"
    for folder, image in ((mine, "rocket.jpg"), (theirs, "chelsea.png")):
        folder.mkdir()
        for name in ("a.png", "b.png"):
            shutil.copy(SAMPLE_IMAGES / image, folder / name)
    before = digests(mine, theirs)
    claim = dedupe_sort.claim_sort_folder

    def other_run_first(root: Path) -> int:
        if not (out / "b.png").exists():
            out.mkdir(exist_ok=True)
            os.rename(theirs / "b.png", out / "b.png")  # what the other run did meanwhile
        return claim(root)

    monkeypatch.setattr(dedupe_sort, "claim_sort_folder", other_run_first)
    args = ["dedupe", str(mine), "--threshold", "0.999", "--keep", "first", "-f", "csv", "-q"]
    done = run(*args, "--model", tiny_model, "--sort-into", str(out), "--mode", "move")
    assert done.exit_code == 0, done.output
    *_, last = (line.split(",") for line in done.stdout.splitlines())
    assert (last[1], last[4]) == (str(mine / "b.png"), str(out / "b_1.png"))
    assert sorted(os.listdir(mine)) == ["a.png"]
    assert (out / "b_1.png").read_bytes() == (SAMPLE_IMAGES / "rocket.jpg").read_bytes()
    assert digests(mine, theirs, out) == before


def test_a_report_in_the_sort_folder_never_lands_on_a_moved_image(
    tiny_model: str, tmp_path: Path
) -> None:
    # -o dupes/b.png -f csv: the name was free when checked, then b.png was moved there, and
    # the report written over it: the image was gone
    photos, out = tmp_path / "photos", tmp_path / "dupes"
    photos.mkdir()
    out.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(SAMPLE_IMAGES / "rocket.jpg", photos / name)
    args = ["dedupe", str(photos), "--threshold", "0.999", "--keep", "first", "-f", "csv", "-q"]
    alias = tmp_path / "alias"  # the sort folder, spelled another way
    os.symlink(out, alias)
    report = out / "b.png"
    for dry_run in (["--dry-run"], []):  # the plan shows where the run puts it
        done = run(
            *args,
            *dry_run,
            "--model",
            tiny_model,
            "--sort-into",
            str(alias),
            "--mode",
            "move",
            "-o",
            str(report),
        )
        assert done.exit_code == 0, done.output
        assert report.read_text().splitlines()[-1].endswith(f",{alias / 'b_1.png'}")
        if dry_run:
            report.unlink()
    assert (out / "b_1.png").read_bytes() == (SAMPLE_IMAGES / "rocket.jpg").read_bytes()
    assert sorted(os.listdir(photos)) == ["a.png"]


def test_a_group_kept_in_the_sort_folder_moves_nothing_in(tiny_model: str, tmp_path: Path) -> None:
    # dedupe dupes/b.png photos --keep first: b.png, kept, is in the sort folder already;
    # moving a.png in too left no copy of the image outside the folder of duplicates
    photos, out = tmp_path / "photos", tmp_path / "dupes"
    photos.mkdir()
    out.mkdir()
    shutil.copy(SAMPLE_IMAGES / "rocket.jpg", out / "b.png")
    shutil.copy(SAMPLE_IMAGES / "rocket.jpg", photos / "a.png")
    args = ["dedupe", str(out / "b.png"), str(photos), "--threshold", "0.999", "--keep", "first"]
    done = run(
        *args, "--model", tiny_model, "-f", "csv", "-q", "--sort-into", str(out), "--mode", "move"
    )
    assert done.exit_code == 0, done.output
    rows = [line.split(",") for line in done.stdout.splitlines()[1:]]
    assert [(row[1], row[3], row[4]) for row in rows] == [
        (str(out / "b.png"), "true", ""),
        (str(photos / "a.png"), "false", ""),
    ]
    assert os.listdir(photos) == ["a.png"]
