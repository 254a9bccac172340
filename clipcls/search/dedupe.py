"""Near-duplicate groups: images whose embeddings are at cosine >= a threshold, joined into
groups (connected components: a chain of near pairs is one group), one image kept per group by
a stated rule, every member scored by its cosine to the kept one."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from PIL import Image

from clipcls.backends.base import Backend
from clipcls.classify import ShowProgress, no_progress
from clipcls.errors import UsageError
from clipcls.images import open_regular
from clipcls.search.collect import collect
from clipcls.search.pairs import near_components

DEFAULT_THRESHOLD = 0.95  # CLIP ViT-B/32: resized and re-encoded copies ~0.98+, light crops ~0.95+


class KeepRule(str, Enum):
    """Which image of a group stays where it is."""

    LARGEST = "largest"  # most pixels (from the header), then the larger file, then the path
    OLDEST = "oldest"  # earliest modification time, then walk order
    FIRST = "first"  # first in walk order


@dataclass(frozen=True)
class Member:
    """One image of a group: its cosine to the group's kept image, and whether it is that one."""

    path: str
    score: float
    keep: bool


@dataclass(frozen=True)
class Group:
    """Images that are near duplicates of each other: the kept one first, then by score."""

    number: int  # from 1, groups in the walk order of their first image
    members: tuple[Member, ...]

    @property
    def kept(self) -> Member:
        """The image the rule keeps."""
        return self.members[0]

    @property
    def others(self) -> tuple[Member, ...]:
        """The images the rule does not keep."""
        return self.members[1:]


@dataclass(frozen=True)
class Deduplication:
    """A dedupe's answer: the groups, in walk order, and the files that could not be read."""

    groups: tuple[Group, ...]
    failures: tuple[tuple[str, str], ...]  # path, error
    model: str  # the model id the embeddings are of


def dedupe(
    backend: Backend,
    inputs: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
    keep: KeepRule = KeepRule.LARGEST,
    include_hidden: bool = False,
    progress: ShowProgress = no_progress,
    exclude: Path | None = None,
) -> Deduplication:
    """The groups of near-duplicate images of inputs (walked as `label` walks them; exclude:
    a folder not to walk, such as the one duplicates are moved into). Images not yet embedded
    are embedded (then cached); UsageError for a threshold outside (0, 1] (before anything is
    embedded) or no image found."""
    check_threshold(threshold)
    collection = collect(backend, inputs, include_hidden, progress, exclude)
    groups = duplicate_groups(collection.paths, collection.matrix, threshold, keep)
    return Deduplication(groups, collection.failures, collection.model)


def check_threshold(threshold: float) -> float:
    """The threshold, or a UsageError unless it is a cosine in (0, 1]."""
    if not (isinstance(threshold, int | float) and 0.0 < threshold <= 1.0):
        raise UsageError(f"--threshold must be a cosine in (0, 1], not {threshold}")
    return float(threshold)


def duplicate_groups(
    paths: Sequence[str],
    matrix: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    keep: KeepRule = KeepRule.LARGEST,
    exact: bool | None = None,
) -> tuple[Group, ...]:
    """The groups of two or more images among paths (row i of matrix, (n, dim) unit rows, is
    paths[i]; paths in walk order) at cosine >= threshold, each with one image kept by rule.
    exact: None lets the search choose (pairs.near_components), True or False forces it."""
    check_threshold(threshold)
    if len(paths) != len(matrix):
        raise ValueError(f"{len(paths)} paths for {len(matrix)} embeddings")
    roots = near_components(matrix, threshold, exact)
    order = np.argsort(roots, kind="stable")  # rows of each component together, in walk order
    sorted_roots = roots[order]
    starts = np.flatnonzero(np.r_[True, sorted_roots[1:] != sorted_roots[:-1]])
    sizes = np.diff(np.r_[starts, len(roots)])
    chooser = _choosers[keep]
    groups: list[Group] = []
    shared = sizes >= 2
    for start, size in zip(starts[shared], sizes[shared], strict=True):  # roots: walk order
        rows = order[start : start + size]
        groups.append(_group(len(groups) + 1, paths, matrix, rows, chooser(paths, rows)))
    return tuple(groups)


def _group(
    number: int, paths: Sequence[str], matrix: np.ndarray, rows: np.ndarray, kept: int
) -> Group:
    """A group with the kept row first, then the others by cosine to it (ties: walk order)."""
    # (members, dim) @ (dim,) -> (members,) cosines to the kept image
    scores = np.asarray(matrix[rows], dtype=np.float32) @ np.asarray(matrix[kept], np.float32)
    scores = np.minimum(scores, 1.0)  # float16 rows can give 1.0002 for twins
    ranked = sorted(range(len(rows)), key=lambda i: (rows[i] != kept, -scores[i], rows[i]))
    members = tuple(
        Member(paths[rows[i]], 1.0 if rows[i] == kept else float(scores[i]), bool(rows[i] == kept))
        for i in ranked
    )
    return Group(number, members)


def _first(paths: Sequence[str], rows: np.ndarray) -> int:
    return int(rows.min())


def _oldest(paths: Sequence[str], rows: np.ndarray) -> int:
    return int(min(rows, key=lambda row: (_mtime(paths[row]), row)))


def _largest(paths: Sequence[str], rows: np.ndarray) -> int:
    return int(
        min(rows, key=lambda row: (-_pixels(paths[row]), -_file_size(paths[row]), paths[row]))
    )


_choosers: dict[KeepRule, Callable[[Sequence[str], np.ndarray], int]] = {
    KeepRule.FIRST: _first,
    KeepRule.OLDEST: _oldest,
    KeepRule.LARGEST: _largest,
}


def _mtime(path: str) -> float:
    """The file's modification time in ns; a file gone meanwhile (or a URL) sorts last."""
    try:
        return os.stat(path).st_mtime_ns
    except (OSError, ValueError):
        return math.inf


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except (OSError, ValueError):
        return 0


def _pixels(path: str) -> int:
    """Width * height from the image's header (Pillow opens lazily: nothing is decoded); 0
    where the header cannot be read (a file gone meanwhile, a URL)."""
    try:
        with open_regular(path) as stream, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a decompression-bomb warning: the size is enough
            with Image.open(stream) as image:
                width, height = image.size
    except Exception:  # any reader's error: this image just cannot win on size
        return 0
    return int(width * height)
