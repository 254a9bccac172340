"""dedupe: near pairs found exactly (small sets) or by LSH with >= 99% recall (large ones),
groups of images each within the threshold of the one a stated rule keeps, and the others
copied (or moved) out without loss."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from conftest import SAMPLE_IMAGES, clipcls_process, jsonl
from PIL import Image
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.errors import ClipclsError, UsageError
from clipcls.labeling.sorting import SortMode
from clipcls.search import dedupe_sort, pairs
from clipcls.search.dedupe import KeepRule, check_threshold, duplicate_groups
from clipcls.search.dedupe_sort import apply_placements, plan_placements


def cached_like(n: int, dim: int = 512, planted: int = 2000, seed: int = 0) -> tuple:
    """Float16 unit rows sharing one direction as CLIP embeddings do (mean cosine ~0.5), with
    `planted` pairs at cosines drawn from [0.95, 1.0]: (matrix, sources, copies)."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(dim)
    rows = rng.standard_normal((n, dim)).astype(np.float32)
    rows = np.sqrt(0.5) * shared / np.linalg.norm(shared) + np.sqrt(0.5) * pairs_unit(rows)
    rows = pairs_unit(rows)
    sources = rng.choice(n // 2, planted, replace=False)
    copies = n // 2 + rng.choice(n - n // 2, planted, replace=False)
    cosine = rng.uniform(0.95, 1.0, planted)[:, None]
    away = rng.standard_normal((planted, dim))
    away -= (away * rows[sources]).sum(axis=1, keepdims=True) * rows[sources]
    rows[copies] = cosine * rows[sources] + np.sqrt(1 - cosine**2) * pairs_unit(away)
    return rows.astype(np.float16), sources, copies


def pairs_unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def cosines(matrix: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    a, b = matrix[left].astype(np.float32), matrix[right].astype(np.float32)
    return np.einsum("ij,ij->i", a, b)


def test_lsh_finds_at_least_99_percent_of_the_planted_pairs() -> None:
    matrix, sources, copies = cached_like(30_000)
    labels = pairs.near_components(matrix, 0.95, exact=False)
    near = cosines(matrix, sources, copies) >= 0.95  # float16 rounding moves a few below
    found = labels[sources] == labels[copies]
    assert near.sum() > 1900
    assert found[near].mean() >= 0.99
    edge = near & (cosines(matrix, sources, copies) < 0.96)  # the hardest: at the threshold
    assert found[edge].mean() >= 0.98


def test_lsh_joins_only_verified_pairs() -> None:
    matrix, sources, copies = cached_like(25_000, planted=500, seed=1)
    labels = pairs.near_components(matrix, 0.95, exact=False)
    roots, counts = np.unique(labels, return_counts=True)
    for root in roots[counts > 1]:  # every group is a planted pair at >= 0.95, nothing more
        members = np.flatnonzero(labels == root)
        assert len(members) == 2
        assert cosines(matrix, members[:1], members[1:])[0] >= 0.95


def test_small_sets_are_searched_exactly() -> None:
    matrix, sources, copies = cached_like(3_000, planted=300, seed=2)
    near = cosines(matrix, sources, copies) >= 0.97
    labels = pairs.near_components(matrix, 0.97)  # below EXACT_UP_TO: every pair is checked
    assert (labels[sources] == labels[copies]).tolist() == near.tolist()
    assert np.array_equal(labels, pairs.near_components(matrix, 0.97, exact=True))


def test_a_chain_of_near_pairs_is_one_group() -> None:
    base = np.eye(4, dtype=np.float32)
    a = base[0]
    b = pairs_unit((base[0] + 0.4 * base[1])[None])[0]
    c = pairs_unit((base[0] + 0.8 * base[1])[None])[0]
    matrix = np.stack([a, c, base[2], b]).astype(np.float16)
    assert float(a @ c) < 0.9 < min(float(a @ b), float(b @ c))
    assert pairs.near_components(matrix, 0.9).tolist() == [0, 0, 2, 0]


def test_components_union_many_edges_at_once() -> None:
    components = pairs.Components(6)
    components.union(np.array([5, 4, 1]), np.array([4, 3, 2]))
    assert components.labels().tolist() == [0, 1, 1, 3, 3, 3]
    components.union(np.array([2]), np.array([5]))
    assert components.labels().tolist() == [0, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.01, float("nan"), float("inf")])
def test_a_threshold_outside_0_1_is_refused(bad: float) -> None:
    with pytest.raises(UsageError, match=r"\(0, 1\]"):
        check_threshold(bad)


def picture(path: Path, size: tuple[int, int], mtime: int, padding: int = 0) -> str:
    Image.new("RGB", size, (120, 30, 200)).save(path)
    with path.open("ab") as stream:
        stream.write(b"\0" * padding)  # a larger file of the same pixels
    os.utime(path, (mtime, mtime))
    return str(path)


def twins(tmp_path: Path) -> tuple[list[str], np.ndarray]:
    """Four files: 0, 1 and 3 one group (the same embedding), 2 apart."""
    paths = [
        picture(tmp_path / "a.png", (20, 10), mtime=3000),
        picture(tmp_path / "b.png", (40, 40), mtime=2000),
        picture(tmp_path / "c.png", (50, 50), mtime=1000),
        picture(tmp_path / "d.png", (40, 40), mtime=4000, padding=100),
    ]
    vectors = np.eye(4, dtype=np.float32)[[0, 0, 1, 0]]
    vectors[1] = pairs_unit((vectors[1] + 0.1 * np.eye(4)[3])[None])[0]
    return paths, vectors.astype(np.float16)


@pytest.mark.parametrize(
    ("rule", "kept"),
    [
        (KeepRule.LARGEST, "d.png"),  # b and d have the most pixels: d is the larger file
        (KeepRule.OLDEST, "b.png"),
        (KeepRule.FIRST, "a.png"),
    ],
)
def test_each_keep_rule_keeps_its_image(tmp_path: Path, rule: KeepRule, kept: str) -> None:
    paths, matrix = twins(tmp_path)
    (group,) = duplicate_groups(paths, matrix, 0.95, rule)
    assert group.number == 1
    assert Path(group.kept.path).name == kept and group.kept.keep and group.kept.score == 1.0
    assert sorted(Path(m.path).name for m in group.members) == ["a.png", "b.png", "d.png"]
    assert [m.keep for m in group.members] == [True, False, False]
    scores = [m.score for m in group.others]
    assert scores == sorted(scores, reverse=True) and all(0.95 <= s <= 1.0 for s in scores)


def test_no_pair_at_the_threshold_means_no_group(tmp_path: Path) -> None:
    paths, matrix = twins(tmp_path)
    assert duplicate_groups(paths[2:3] + paths[:1], matrix[[2, 0]], 0.95) == ()


def test_moving_out_moves_only_the_others_and_never_overwrites(tmp_path: Path) -> None:
    paths, matrix = twins(tmp_path)
    out = tmp_path / "dupes"
    out.mkdir()
    (out / "b.png").write_bytes(b"someone else's file")
    groups = duplicate_groups(paths, matrix, 0.95, KeepRule.FIRST)
    placements = plan_placements(groups, out, SortMode.MOVE)
    assert [Path(p.target).name for p in placements] == ["d.png", "b_1.png"]  # by score
    apply_placements(placements, out, SortMode.MOVE)
    assert (tmp_path / "a.png").exists() and (tmp_path / "c.png").exists()
    assert not (tmp_path / "b.png").exists() and not (tmp_path / "d.png").exists()
    assert (out / "b.png").read_bytes() == b"someone else's file"
    assert {p.name for p in out.iterdir()} == {"b.png", "b_1.png", "d.png", ".clipcls-sort"}


def test_same_names_from_two_folders_both_keep_their_files(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    paths = [picture(tmp_path / folder / "p.png", (9, 9), mtime=1000) for folder in ("x", "y")]
    paths.insert(0, picture(tmp_path / "keep.png", (30, 30), mtime=1000))
    matrix = np.ones((3, 4), dtype=np.float16) / 2
    groups = duplicate_groups(paths, matrix, 0.95, KeepRule.LARGEST)
    out = tmp_path / "out"
    placements = plan_placements(groups, out, SortMode.COPY)
    apply_placements(placements, out, SortMode.COPY)
    assert sorted(p.name for p in out.iterdir() if p.suffix) == ["p.png", "p_1.png"]
    again = plan_placements(groups, out, SortMode.COPY)  # a rerun finds its copies: no p_2
    assert again == placements


def test_a_move_killed_between_link_and_unlink_is_finished_by_a_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, matrix = twins(tmp_path)
    out = tmp_path / "dupes"
    groups = duplicate_groups(paths, matrix, 0.95, KeepRule.FIRST)
    unlink = os.unlink

    def killed(path: object, *args: object, **kwargs: object) -> None:
        if os.path.basename(str(path)) == "d.png":  # by name, beside its folder's descriptor
            raise KeyboardInterrupt  # the kill, after d.png's second name was made
        unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "unlink", killed)
    with pytest.raises(KeyboardInterrupt):
        apply_placements(plan_placements(groups, out, SortMode.MOVE), out, SortMode.MOVE)
    monkeypatch.setattr(os, "unlink", unlink)
    assert (tmp_path / "d.png").exists() and (out / "d.png").exists()
    rest = [p for p in paths if os.path.exists(p)]  # the rerun walks what is left
    left = matrix[[paths.index(p) for p in rest]]
    again = plan_placements(duplicate_groups(rest, left, 0.95, KeepRule.FIRST), out, SortMode.MOVE)
    assert [Path(p.target).name for p in again] == ["d.png", "b.png"]  # d's name found again
    apply_placements(again, out, SortMode.MOVE)
    assert sorted(p.name for p in out.iterdir() if p.suffix) == ["b.png", "d.png"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix) == ["a.png", "c.png"]


def test_a_move_that_fails_says_which_file_in_one_line(tmp_path: Path) -> None:
    paths, matrix = twins(tmp_path)
    groups = duplicate_groups(paths, matrix, 0.95, KeepRule.FIRST)
    placements = plan_placements(groups, tmp_path / "out", SortMode.MOVE)
    os.unlink(paths[3])  # gone since it was embedded
    with pytest.raises(ClipclsError, match=r"cannot move .*d\.png to "):
        apply_placements(placements, tmp_path / "out", SortMode.MOVE)


def test_hard_links_across_file_systems_are_refused_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dedupe_sort, "first_on_another_device", lambda root, inputs: inputs[0])
    with pytest.raises(UsageError, match="different file systems"):
        dedupe_sort.check_sort_target(tmp_path / "out", SortMode.HARDLINK, [str(tmp_path)])


# The command, with the tiny random-weight model. Its random weights put every photo in a
# narrow cone (distinct sample photos reach cosine 0.98 with each other), while a resized, a
# JPEG-60 and a 95% crop of a photo stay at >= 0.995 to it: so these tests use --threshold
# 0.99, which holds for them; the default 0.95 is for trained CLIP weights.

runner = CliRunner()
THRESHOLD = "0.99"
COPIES = 1500  # files in the kill test's one group: enough moves for a kill to land among


def dedupe_cli(model: str, *args: str) -> Result:
    return runner.invoke(app, ["dedupe", *args, "--model", model, "--precision", "fp32"])


def photo_copies(folder: Path) -> Path:
    """chelsea, coffee and rocket, and three copies of chelsea: half size, JPEG quality 60,
    and the middle 95% cropped."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("chelsea.png", "coffee.png", "rocket.jpg"):
        (folder / name).write_bytes((SAMPLE_IMAGES / name).read_bytes())
    cat = Image.open(SAMPLE_IMAGES / "chelsea.png").convert("RGB")
    width, height = cat.size
    copies = folder / "copies"
    copies.mkdir()
    cat.resize((width // 2, height // 2)).save(copies / "small.png")
    cat.save(copies / "q60.jpg", quality=60)
    left, top = round(width * 0.025), round(height * 0.025)
    cat.crop((left, top, width - left, height - top)).save(copies / "crop.png")
    return folder


def test_resized_reencoded_and_cropped_copies_join_their_original(
    tiny_model: str, tmp_path: Path
) -> None:
    folder = photo_copies(tmp_path / "photos")
    result = dedupe_cli(tiny_model, str(folder), "--threshold", THRESHOLD, "-f", "jsonl")
    assert result.exit_code == 0, result.stderr
    rows = jsonl(result.stdout)
    assert {Path(r["path"]).name for r in rows} == {
        "chelsea.png",
        "small.png",
        "q60.jpg",
        "crop.png",
    }
    assert {r["group"] for r in rows} == {1}
    kept = [r for r in rows if r["keep"]]
    assert [Path(r["path"]).name for r in kept] == [
        "chelsea.png"
    ]  # the most pixels, the larger file
    assert rows[0] == kept[0] and rows[0]["score"] == 1.0
    assert all(0.99 <= r["score"] <= 1.0 for r in rows)
    assert list(rows[0]) == ["group", "path", "score", "keep"]
    assert "1 group of near duplicates, 3 not kept" in result.stderr


def test_a_dedupe_over_cached_images_loads_no_model(tiny_model: str, tmp_path: Path) -> None:
    folder = photo_copies(tmp_path / "photos")
    args = ["dedupe", str(folder), "--model", tiny_model, "--precision", "fp32"]
    first, _, _ = clipcls_process(*args, "--threshold", THRESHOLD, "-f", "csv")
    again, torch, _ = clipcls_process(*args, "--threshold", THRESHOLD, "-f", "csv")
    assert again == first and len(first.splitlines()) == 5
    assert not torch


def test_distinct_photos_stay_apart(tiny_model: str, photos: Path) -> None:
    result = dedupe_cli(tiny_model, str(photos), "--threshold", THRESHOLD, "-f", "csv")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "group,path,score,keep\n"


def test_keep_first_and_sort_into_moves_only_the_others(tiny_model: str, tmp_path: Path) -> None:
    folder = photo_copies(tmp_path / "photos")
    out = tmp_path / "dupes"
    out.mkdir()
    (out / "crop.png").write_bytes(b"not to be replaced")
    before = {p: p.read_bytes() for p in folder.rglob("*.*")}
    args = [str(folder), "--threshold", THRESHOLD, "--keep", "first", "--sort-into", str(out)]
    args += ["--mode", "move"]
    planned = dedupe_cli(tiny_model, *args, "--dry-run", "-f", "jsonl")
    assert planned.exit_code == 0, planned.stderr
    assert {p: p.read_bytes() for p in folder.rglob("*.*")} == before  # a dry run moves nothing
    assert sorted(p.name for p in out.iterdir()) == ["crop.png"]
    assert "would move 3 files into" in planned.stderr
    moved = dedupe_cli(tiny_model, *args, "-f", "jsonl")
    assert moved.exit_code == 0, moved.stderr
    assert jsonl(moved.stdout) == jsonl(planned.stdout)  # the plan shown is the plan carried out
    rows = jsonl(moved.stdout)
    assert Path(rows[0]["path"]).name == "chelsea.png" and rows[0]["destination"] == ""
    assert sorted(Path(r["destination"]).name for r in rows[1:]) == [
        "crop_1.png",
        "q60.jpg",
        "small.png",
    ]
    assert (out / "crop.png").read_bytes() == b"not to be replaced"
    assert sorted(p.name for p in (folder / "copies").iterdir()) == []
    for row in rows[1:]:
        assert Path(row["destination"]).read_bytes() == before[Path(row["path"])]
    again = dedupe_cli(tiny_model, *args, "-f", "jsonl")  # the sort folder is not walked
    assert again.exit_code == 0 and again.stdout == ""


def test_odd_file_names_are_escaped_in_paths_and_destinations(
    tiny_model: str, tmp_path: Path
) -> None:
    folder = photo_copies(tmp_path / "photos")
    odd = os.fsdecode(b"=cmd\xff.png")  # not UTF-8, and a formula to a spreadsheet
    os.rename(folder / "copies" / "small.png", folder / "copies" / odd)
    out = tmp_path / "dupes"
    args = [str(folder), "--threshold", THRESHOLD, "--sort-into", str(out)]
    listed = dedupe_cli(tiny_model, *args, "--dry-run", "-f", "jsonl")
    assert listed.exit_code == 0, listed.stderr
    (row,) = [r for r in jsonl(listed.stdout) if "cmd" in r["path"]]
    assert row["path"].endswith("copies/=cmd\\xff.png")
    assert row["destination"] == str(out / "=cmd\\xff.png")
    rows = dedupe_cli(tiny_model, *args, "--dry-run", "-f", "csv")
    assert rows.exit_code == 0, rows.stderr
    assert f",{out}/=cmd\\xff.png\n" in rows.stdout  # the destination cell, escaped the same


@pytest.mark.parametrize("bad", ["0", "1.5", "-0.2", "nan"])
def test_a_threshold_outside_0_1_exits_2_in_one_line(
    tiny_model: str, photos: Path, bad: str
) -> None:
    out = photos.parent / "dupes"
    result = dedupe_cli(tiny_model, str(photos), "--threshold", bad, "--sort-into", str(out))
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "(0, 1]" in result.stderr
    assert not out.exists() and len(list(photos.iterdir())) == 4


def test_an_empty_folder_exits_2_in_one_line(tiny_model: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "dupes"
    result = dedupe_cli(tiny_model, str(tmp_path / "empty"), "--sort-into", str(out))
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "no images" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("option", ["--mode=copy", "--mode=move"])
def test_mode_needs_sort_into(tiny_model: str, photos: Path, option: str) -> None:
    result = dedupe_cli(tiny_model, str(photos), option)
    assert result.exit_code == 2 and "--mode needs --sort-into" in result.stderr


def test_dry_run_without_sort_into_is_the_plain_listing(tiny_model: str, tmp_path: Path) -> None:
    folder = photo_copies(tmp_path / "photos")
    before = {p: p.read_bytes() for p in folder.rglob("*.*")}
    plain = dedupe_cli(tiny_model, str(folder), "--threshold", THRESHOLD, "-f", "csv")
    dry = dedupe_cli(tiny_model, str(folder), "--threshold", THRESHOLD, "--dry-run", "-f", "csv")
    assert plain.exit_code == dry.exit_code == 0, dry.stderr
    assert dry.stdout == plain.stdout and dry.stdout.startswith("group,path,score,keep\n")
    assert len(dry.stdout.splitlines()) == 5  # chelsea and its three copies
    assert dry.stderr.splitlines()[-1] == "1 group of near duplicates, 3 not kept"
    assert {p: p.read_bytes() for p in folder.rglob("*.*")} == before


def test_sort_into_copies_unless_mode_move_is_given(tiny_model: str, tmp_path: Path) -> None:
    folder = photo_copies(tmp_path / "photos")
    before = {p: p.read_bytes() for p in folder.rglob("*.*")}
    out = tmp_path / "dupes"
    args = [str(folder), "--threshold", THRESHOLD, "--sort-into", str(out), "-f", "jsonl"]
    copied = dedupe_cli(tiny_model, *args)
    assert copied.exit_code == 0, copied.stderr
    assert "copied 3 files into" in copied.stderr
    assert {p: p.read_bytes() for p in folder.rglob("*.*")} == before  # every source stays
    rows = jsonl(copied.stdout)
    for row in rows[1:]:
        assert Path(row["destination"]).read_bytes() == before[Path(row["path"])]
    args[args.index(str(out))] = str(tmp_path / "moved")
    moved = dedupe_cli(tiny_model, *args, "--mode", "move")
    assert moved.exit_code == 0, moved.stderr
    assert "moved 3 files into" in moved.stderr
    assert [r["path"] for r in jsonl(moved.stdout)] == [r["path"] for r in rows]
    assert sorted(p.name for p in folder.rglob("*.*")) == [
        "chelsea.png",
        "coffee.png",
        "rocket.jpg",
    ]


def test_sorting_into_a_folder_being_deduplicated_is_refused(
    tiny_model: str, tmp_path: Path
) -> None:
    folder = photo_copies(tmp_path / "photos")
    before = sorted(folder.rglob("*"))
    result = dedupe_cli(tiny_model, str(folder / "copies"), "--sort-into", str(folder / "copies"))
    assert result.exit_code == 2 and "being deduplicated" in result.stderr
    assert sorted(folder.rglob("*")) == before


def test_an_image_already_in_the_sort_folder_stays_where_it_is(tmp_path: Path) -> None:
    paths, matrix = twins(tmp_path)
    groups = duplicate_groups(paths, matrix, 0.95, KeepRule.FIRST)
    placements = plan_placements(groups, tmp_path, SortMode.MOVE)  # b and d are in it
    assert placements == []
    apply_placements(placements, tmp_path, SortMode.MOVE)
    assert all(os.path.exists(path) for path in paths)


@pytest.mark.slow
def test_kill_9_during_moves_then_a_rerun_finishes_without_loss(
    tiny_model: str, tmp_path: Path
) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "dupes"
    inbox.mkdir()
    small = Image.open(SAMPLE_IMAGES / "chelsea.png").convert("RGB").resize((48, 32))
    small.save(inbox / "0000.png")
    for i in range(1, COPIES):  # one group: all but 0000.png to move
        (inbox / f"{i:04d}.png").write_bytes((inbox / "0000.png").read_bytes())
    args = ["dedupe", str(inbox), "--model", tiny_model, "--precision", "fp32"]
    args += ["--threshold", THRESHOLD, "-q", "-f", "csv"]
    assert subprocess.run(command(*args), capture_output=True, timeout=300).returncode == 0
    move = ("--sort-into", str(out), "--mode", "move")
    chance, interrupted = random.Random("dedupe-kill"), 0
    for _ in range(4):
        left = len(os.listdir(inbox))
        process = subprocess.Popen(
            command(*args, *move),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while process.poll() is None and len(os.listdir(inbox)) == left:
            assert time.monotonic() < deadline
            time.sleep(0.0005)  # until the first file of this run has moved
        time.sleep(chance.uniform(0, 0.004))
        process.kill()
        process.wait()
        interrupted += len(os.listdir(inbox)) > 1
    assert interrupted  # at least one kill landed while files were being moved
    finished = subprocess.run(command(*args, *move), capture_output=True)
    assert finished.returncode == 0, finished.stderr
    assert sorted(p.name for p in inbox.iterdir()) == ["0000.png"]
    moved = sorted(p.name for p in out.iterdir() if p.suffix == ".png")
    assert moved == [f"{i:04d}.png" for i in range(1, COPIES)]  # none lost, none doubled
    assert len({p.read_bytes() for p in out.glob("*.png")}) == 1


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "clipcls", *args]
