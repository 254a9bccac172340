"""Stored search matrices do not pile up: the most recently used listings are kept within the
cache's size bound, and what a killed writer left is removed once it is old."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from clipcls.search.store import KEPT, Stored, load_stored, prune_stored, save_stored, versions


def listing(parent: Path, index: int, size: int, used: float) -> Path:
    folder = parent / f"{index:064x}"
    folder.mkdir(parents=True)
    (folder / "matrix.npy").write_bytes(b"\0" * size)
    os.utime(folder, (used, used))
    return folder


def test_the_most_recently_used_listings_are_kept_within_the_bound(tmp_path: Path) -> None:
    now = 1_000_000.0
    folders = [listing(tmp_path, i, 100, now - 1000 + i) for i in range(KEPT + 4)]
    ann = tmp_path / "ann"
    ann.mkdir()  # the approximate index's own folder
    prune_stored(tmp_path, budget=10_000, now=now)
    assert [f.exists() for f in folders] == [False] * 4 + [True] * KEPT
    assert ann.exists()
    prune_stored(tmp_path, budget=450, now=now)  # four of 100 bytes fit
    assert [f.exists() for f in folders[-5:]] == [False, True, True, True, True]
    prune_stored(tmp_path, budget=0, now=now)  # the newest stays, whatever its size
    assert [f.name for f in tmp_path.iterdir() if f.name != "ann"] == [folders[-1].name]


def test_a_killed_writers_leftovers_go_once_they_are_old(tmp_path: Path) -> None:
    now = 1_000_000.0
    old, young = tmp_path / ".new-old", tmp_path / ".new-young"
    for folder, age in ((old, 7200), (young, 60)):
        folder.mkdir()
        (folder / "matrix.npy").write_bytes(b"x")
        os.utime(folder, (now - age, now - age))
    prune_stored(tmp_path, budget=10**9, now=now)
    assert not old.exists() and young.exists()  # another search may be writing that one


def test_loading_a_listing_marks_it_used_and_saving_prunes(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    paths = []
    for i in range(3):
        (images / f"{i}.jpg").write_bytes(b"x" * (i + 1))
        paths.append(str(images / f"{i}.jpg"))
    found = versions(paths)
    assert found is not None
    parent = tmp_path / "search"
    stored = Stored(np.ones((3, 4), np.float16), (), "m")
    first = parent / ("a" * 64)
    save_stored(first, found, stored)
    os.utime(first, (1, 1))  # long unused
    assert load_stored(first, found) is not None
    assert first.stat().st_mtime > 1  # used now
    for i in range(KEPT + 2):  # other listings, newer still
        save_stored(parent / f"{i:064x}", found, stored)
    assert len(list(parent.iterdir())) == KEPT
