"""dedupe's groups are stars around the kept image: every member within the threshold of it
(never a chain of near pairs), the kept image the rule's first choice in its group, no image
left out that is near a kept one, and the groups of the files left unchanged by moving others."""

from __future__ import annotations

import numpy as np
import pytest

from clipcls.search import pairs, stars
from clipcls.search.dedupe import DEFAULT_THRESHOLD, Group, KeepRule, duplicate_groups
from clipcls.search.pairs import ROUNDING


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def names(n: int) -> list[str]:
    return [f"{i:05d}.png" for i in range(n)]  # --keep first reads no file


def check_stars(groups: tuple[Group, ...], paths: list[str], matrix: np.ndarray, t: float) -> None:
    """The promises of a grouping, checked against cosines computed here."""
    rows = unit(matrix)
    index = {path: i for i, path in enumerate(paths)}
    grouped = [index[m.path] for g in groups for m in g.members]
    assert len(grouped) == len(set(grouped))  # no image in two groups
    kept = [index[g.kept.path] for g in groups]
    for group, keeper in zip(groups, kept, strict=True):
        members = [index[m.path] for m in group.others]
        assert members and group.kept.keep and not any(m.keep for m in group.others)
        cosines = rows[members] @ rows[keeper]
        assert (cosines >= t - ROUNDING).all(), (group.number, cosines.min())
        assert [m.score for m in group.others] == pytest.approx(cosines.tolist(), abs=1e-5)
        assert keeper < min(members)  # --keep first: the group's first image is kept
    outside = sorted(set(range(len(paths))) - set(grouped))
    if kept:  # no kept image is near another, nor near an image left out of every group
        near = rows[kept + outside] @ rows[kept].T >= t - ROUNDING
        assert near[: len(kept)].sum() == len(kept) and not near[len(kept) :].any()
    assert [g.number for g in groups] == list(range(1, len(groups) + 1))
    firsts = [min(index[m.path] for m in g.members) for g in groups]
    assert firsts == sorted(firsts)  # numbered in walk order of their first image


def test_a_chain_whose_ends_are_far_is_split_around_kept_images() -> None:
    # a-b-c-d: each neighbour at 0.98, the ends at cosine ~0.82: single linkage made one group
    angles = np.radians([0.0, 11.0, 22.0, 33.0])
    matrix = np.stack([np.cos(angles), np.sin(angles), np.zeros(4)], axis=1).astype(np.float16)
    paths = names(4)
    assert pairs.near_components(matrix, 0.95).tolist() == [0, 0, 0, 0]
    groups = duplicate_groups(paths, matrix, 0.95, KeepRule.FIRST)
    assert [[m.path for m in g.members] for g in groups] == [paths[:2], paths[2:]]
    check_stars(groups, paths, matrix, 0.95)
    # walk order b, a, c, d: b keeps both its neighbours; d, far from b, stays alone
    order = [1, 0, 2, 3]
    (group,) = duplicate_groups([paths[i] for i in order], matrix[order], 0.95, KeepRule.FIRST)
    assert group.kept.path == "00001.png"
    assert sorted(m.path for m in group.others) == ["00000.png", "00002.png"]
    assert min(m.score for m in group.members) >= 0.95


def test_a_drifting_burst_of_45_is_not_one_group_with_far_members() -> None:
    # the case at the old default 0.95: 45 shots, each 1 degree on from the last (cosine
    # 0.9998), the last at 0.72 to the first; single linkage made one group of all 45
    angles = np.radians(np.arange(45.0))
    rng = np.random.default_rng(45)
    basis = np.linalg.qr(rng.standard_normal((32, 2)))[0].T  # a plane in 32 dimensions
    matrix = (np.stack([np.cos(angles), np.sin(angles)], axis=1) @ basis).astype(np.float16)
    paths = names(45)
    assert float(unit(matrix[0]) @ unit(matrix[-1])) < 0.72
    assert len(set(pairs.near_components(matrix, 0.95).tolist())) == 1  # one chain
    for rule_order in (range(45), range(44, -1, -1), rng.permutation(45)):
        order = list(rule_order)
        shuffled = [paths[i] for i in order]
        groups = duplicate_groups(shuffled, matrix[order], 0.95, KeepRule.FIRST)
        check_stars(groups, shuffled, matrix[order], 0.95)
        assert 2 <= len(groups) and max(len(g.members) for g in groups) <= 37  # +-18 degrees


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.9, 0.95, DEFAULT_THRESHOLD])
def test_random_clusters_keep_every_promise(seed: int, threshold: float) -> None:
    # a few dimensions, so that near pairs, chains and overlapping stars abound
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((40, 6)))
    matrix = unit(centres[rng.integers(0, 40, 600)] + rng.normal(0, 0.08, (600, 6)))
    matrix16, paths = matrix.astype(np.float16), names(600)
    groups = duplicate_groups(paths, matrix16, threshold, KeepRule.FIRST)
    assert len(groups) >= 10
    check_stars(groups, paths, matrix16, threshold)


def test_stars_hold_when_lsh_finds_the_pairs() -> None:
    rng = np.random.default_rng(7)
    shared = unit(rng.standard_normal(512))
    matrix = unit(np.sqrt(0.5) * shared + np.sqrt(0.5) * unit(rng.standard_normal((24_000, 512))))
    for start in range(0, 3000, 6):  # bursts of six, each shot at ~0.97 to the one before
        for i in range(start + 1, start + 6):
            matrix[i] = unit(matrix[i - 1] + 0.25 * unit(rng.standard_normal(512)))
    matrix16, paths = matrix.astype(np.float16), names(len(matrix))
    groups = duplicate_groups(paths, matrix16, 0.95, KeepRule.FIRST, exact=False)
    assert len(groups) >= 400
    check_stars(groups, paths, matrix16, 0.95)


@pytest.mark.parametrize("seed", range(4))
def test_moving_members_out_leaves_every_other_group_as_it_was(seed: int) -> None:
    # what a rerun after a killed move sees: some groups' members gone, the rest unchanged
    rng = np.random.default_rng(100 + seed)
    centres = unit(rng.standard_normal((30, 6)))
    matrix = unit(centres[rng.integers(0, 30, 400)] + rng.normal(0, 0.08, (400, 6)))
    matrix16, paths = matrix.astype(np.float16), names(400)
    before = duplicate_groups(paths, matrix16, 0.95, KeepRule.FIRST)
    gone = {m.path for g in before[::2] for m in g.others[: rng.integers(1, 4)]}
    left = [i for i, path in enumerate(paths) if path not in gone]
    after = duplicate_groups([paths[i] for i in left], matrix16[left], 0.95, KeepRule.FIRST)
    expected = [(g.kept.path, [m.path for m in g.others if m.path not in gone]) for g in before]
    assert [(g.kept.path, [m.path for m in g.others]) for g in after] == [
        (kept, others) for kept, others in expected if others
    ]


@pytest.mark.parametrize("tail", [0, 40])
def test_a_component_larger_than_one_block_is_grouped_whole(tail: int) -> None:
    # 3,000 copies of one image (and a drifting tail): more rows than one block of candidates
    # compares at once (stars.CELLS), all the copies kept by the first row in the first block
    rng = np.random.default_rng(3)
    image = unit(rng.standard_normal(64))
    copies = unit(image + rng.normal(0, 0.004, (3000, 64)))
    steps = np.outer(np.arange(1, tail + 1), unit(rng.standard_normal(64))) * 0.02
    matrix = np.vstack([copies, unit(image + steps)]).astype(np.float16)
    assert len(matrix) ** 2 > stars.CELLS
    paths = names(len(matrix))
    groups = duplicate_groups(paths, matrix, 0.99, KeepRule.FIRST)
    check_stars(groups, paths, matrix, 0.99)
    assert groups[0].kept.path == paths[0] and len(groups[0].members) >= 3000
