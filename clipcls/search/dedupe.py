"""Near-duplicate groups: one image kept per group by a stated rule, and with it every image
at cosine >= a threshold to it (a star around the kept image: a chain of near pairs is no group),
each member scored by its cosine to the kept one."""

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
from clipcls.search.stars import star_groups

# Cosine 0.985: the same photo re-encoded or resized. immich (CLIP ViT-B/32) went from 0.97 to
# 0.9845 and then 0.99 as users reported bursts and near-shots grouped as duplicates; 0.95 catches
# those too. See docs/search.md.
DEFAULT_THRESHOLD = 0.985


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
    """An image kept and its near duplicates (each within the threshold of it): the kept one
    first, then the others by score."""

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
    paths[i]; paths in walk order): the image the rule prefers most keeps every image not yet
    in a group at cosine >= threshold to it, then the next preferred image left does, and so on.
    So every member is within the threshold of its group's kept image, the kept image is the
    one the rule prefers in its group, and moving members out changes no other group.
    exact: None lets the search choose (pairs.near_components), True or False forces it."""
    check_threshold(threshold)
    if len(paths) != len(matrix):
        raise ValueError(f"{len(paths)} paths for {len(matrix)} embeddings")
    # Near pairs joined into components bound where a star can reach: no star spans two.
    roots = near_components(matrix, threshold, exact)
    order = np.argsort(roots, kind="stable")  # rows of each component together, in walk order
    sorted_roots = roots[order]
    starts = np.flatnonzero(np.r_[True, sorted_roots[1:] != sorted_roots[:-1]])
    sizes = np.diff(np.r_[starts, len(roots)])
    preference = _preferences[keep]
    stars: list[tuple[int, np.ndarray, np.ndarray]] = []
    for start, size in zip(starts[sizes >= 2], sizes[sizes >= 2], strict=True):
        rows = order[start : start + size]
        ranked = np.array(sorted(rows, key=lambda row: preference(paths, int(row))))
        stars.extend(star_groups(matrix, ranked, threshold))
    stars.sort(key=lambda star: int(min(star[0], star[1].min())))  # by first image, walk order
    return tuple(
        _group(number, paths, kept, members, scores)
        for number, (kept, members, scores) in enumerate(stars, start=1)
    )


def _group(
    number: int, paths: Sequence[str], kept: int, rows: np.ndarray, scores: np.ndarray
) -> Group:
    """A group with the kept row first, then the others by cosine to it (ties: walk order)."""
    scores = np.minimum(scores, 1.0)  # float32 sums can give 1.0000001 for twins
    ranked = sorted(range(len(rows)), key=lambda i: (-scores[i], rows[i]))
    others = tuple(Member(paths[rows[i]], float(scores[i]), False) for i in ranked)
    return Group(number, (Member(paths[kept], 1.0, True), *others))


def _first(paths: Sequence[str], row: int) -> tuple[float | int | str, ...]:
    return (row,)


def _oldest(paths: Sequence[str], row: int) -> tuple[float | int | str, ...]:
    return (_mtime(paths[row]), row)


def _largest(paths: Sequence[str], row: int) -> tuple[float | int | str, ...]:
    return (-_pixels(paths[row]), -_file_size(paths[row]), paths[row], row)


# Each rule as a sort key over rows: the smallest key is the image the rule keeps first.
_preferences: dict[KeepRule, Callable[[Sequence[str], int], tuple[float | int | str, ...]]] = {
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
