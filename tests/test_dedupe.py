"""dedupe: near pairs found exactly (small sets) or by LSH with >= 99% recall (large ones),
groups with one image kept by a stated rule, and the others moved out without loss."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
        if str(path).startswith(str(tmp_path / "d")):
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
