"""The server's search collects as `clipcls search` does (search/collect.py), the worker's cache
and image tower its embedding source: the matrix of a folder set is held in memory while its
files are as they were (a server without a cache too), and gathered again once one changes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from conftest import colour_images
from test_search_attack import served_search

from clipcls.client.search_request import SearchRequest
from clipcls.search.store import HeldListings, Stored
from clipcls.terms import Query


def test_a_served_search_is_held_warm_until_a_file_changes(tmp_path: Path) -> None:
    paths = colour_images(tmp_path / "photos", 5)
    search = served_search(tmp_path)  # no cache: only the held matrix keeps it warm
    request = SearchRequest((str(tmp_path / "photos"),), Query.parse("red - blue"), 3)
    first = search.answer(request)
    assert first["embedded"] == 5 and len(first["search"]) == 3
    assert search.answer(request) == {**first, "embedded": 0}
    stat = os.stat(paths[2])
    os.utime(paths[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert search.answer(request)["embedded"] == 5  # gathered again, nothing cached to reuse


def test_held_listings_are_one_per_folder_set_and_few() -> None:
    held = HeldListings(size=2)
    found = np.zeros((1, 4), dtype=np.int64)
    stored = Stored(np.ones((1, 2), dtype=np.float16), (), "m")
    held.save(["a"], ["a/1.jpg"], found, stored)
    assert held.load(["a"], ["a/1.jpg"], found) is stored
    assert held.load(["a"], ["a/2.jpg"], found) is None  # another listing of the same folder
    assert held.load(["a"], ["a/1.jpg"], found + 1) is None  # a file changed
    held.save(["a"], ["a/2.jpg"], found, stored)  # in place of the older listing of ["a"]
    held.save(["b"], ["b/1.jpg"], found, stored)
    assert len(held.held) == 2
    held.save(["c"], ["c/1.jpg"], found, stored)
    assert held.load(["a"], ["a/2.jpg"], found) is None  # the least recently used went
    assert held.load(["b"], ["b/1.jpg"], found) is stored
