"""Move (or link, or copy) the images a dedupe does not keep into one folder, flat, each under
its own name made unique (`name_1.jpg`, ...), with `label`'s rules: nothing is ever replaced, a
move is a second name then the first removed, and a run killed half-way is finished by the next.

Flat, not a folder per group: group numbers change once files have moved out (a finished group
is no group any more), so a per-group folder would put a rerun's files elsewhere; a flat name
is found again by the file it holds, which is what lets a rerun finish a killed move.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipcls.errors import ClipclsError, UsageError
from clipcls.labeling.sortfolder import Entry, SortFolder, claim_sort_folder, existing_sort_folder
from clipcls.labeling.sorting import (
    SortMode,
    absolute,
    first_on_another_device,
    unique_destination,
)
from clipcls.output.writers import plural
from clipcls.pathtext import clean_text
from clipcls.remote import is_url
from clipcls.search.dedupe import Deduplication, Group

COLUMNS = ("group", "path", "score", "keep")  # dedupe's rows; sorting adds destination
DONE = {
    SortMode.MOVE: "moved",
    SortMode.COPY: "copied",
    SortMode.SYMLINK: "linked",
    SortMode.HARDLINK: "hard-linked",
}


@dataclass(frozen=True)
class Placement:
    """Where one image that is not kept goes."""

    source: str
    target: str


def check_sort_target(root: Path, mode: SortMode, inputs: Sequence[str]) -> None:
    """Refuse, before anything is embedded, a sort folder that is one of the inputs (its own
    files would be its duplicates' places) and hard links across file systems."""
    real = os.path.realpath(root)
    if any(not is_url(given) and os.path.realpath(given) == real for given in inputs):
        raise UsageError(
            f"--sort-into {clean_text(str(root))} is a folder being deduplicated: "
            "give a folder of its own"
        )
    other = first_on_another_device(root, inputs) if mode is SortMode.HARDLINK else None
    if other is not None:
        raise UsageError(
            f"--mode hardlink cannot link {clean_text(other)} into {clean_text(str(root))}: "
            "they are on different file systems; use --mode copy or symlink"
        )


def plan_placements(
    groups: Iterable[Group], root: Path, mode: SortMode, report: Path | None = None
) -> list[Placement]:
    """A destination in root for each image not kept (URLs have no file to place), in group
    order; names already holding that very file (a killed run's move, an earlier run's copy
    or link) are used again, others never, nor report's (the -o file, written after the moves:
    it would replace the image moved there). A member that is the kept file itself under
    another name (a link to it, the file a kept link leads to) stays: it is no copy, and
    moved, it would leave a kept link dangling. A group whose kept image is in root already
    moves nothing in: root would then hold every copy of the image."""
    taken: set[Path] = set()
    placements = []
    real_root = os.path.realpath(root)
    if report is not None and os.path.realpath(report.parent) == real_root:
        taken.add(absolute(root / report.name))
    for group in groups:
        if _in_folder(group.kept.path, real_root):
            continue
        kept = None if is_url(group.kept.path) else os.path.realpath(group.kept.path)
        for member in group.others:
            if is_url(member.path) or os.path.realpath(member.path) == kept:
                continue
            source = Path(member.path)
            if _in_folder(member.path, real_root):
                continue  # in the sort folder already (given as a file): its name is its place
            target = unique_destination(
                root, source.name, taken, _reusable(root, source, mode, taken)
            )
            taken.add(absolute(target))
            placements.append(Placement(member.path, str(target)))
    return placements


def _in_folder(path: str, real_folder: str) -> bool:
    """Whether path (not a URL) is a file right in the folder (its real path)."""
    return not is_url(path) and os.path.realpath(Path(path).parent) == real_folder


def _reusable(root: Path, source: Path, mode: SortMode, taken: set[Path]) -> Callable[[Path], bool]:
    """Whether an existing name already holds this source's placing (SortFolder.holds): for a
    move, the same file under both names (a kill between link and unlink); else this file's
    copy or link, unless another image of this run was given the name (two byte-equal copies
    stay two)."""
    return lambda found: (
        (mode is SortMode.MOVE or absolute(found) not in taken)
        and _holds(root, source, found, mode)
    )


def _holds(root: Path, source: Path, found: Path, mode: SortMode) -> bool:
    with existing_sort_folder(root) as folder:
        return folder is not None and folder.holds(str(source), Entry(".", found.name), mode)


def sort_out(
    groups: Sequence[Group],
    root: Path,
    mode: SortMode,
    report: Path | None = None,
    section: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    done: list[Placement] | None = None,
) -> list[Placement]:
    """Plan and carry out the placements under the sort folder's lock: names are chosen once
    no other run (dedupe or label) sorts into it, so none it took meanwhile is planned over.

    Each placement is carried out and added to done (returned) inside one `section()` (the
    CLI's holds stop signals until it ends): stopped, done lists exactly the files placed.
    """
    done = [] if done is None else done
    if not plan_placements(groups, root, mode, report):
        return done  # nothing to place: no folder made
    folder = claim_sort_folder(root)
    try:
        for placement in plan_placements(groups, root, mode, report):
            with section():
                _apply(folder, placement, mode)
                done.append(placement)
    finally:
        folder.close()
    return done


def apply_placements(placements: Sequence[Placement], root: Path, mode: SortMode) -> None:
    """Carry out the plan under the sort folder's lock (no `label` run sorts into it
    meanwhile); a destination that exists already holds its file (see plan_placements)."""
    if not placements:
        return
    folder = claim_sort_folder(root)  # also marks it: later walks of a parent skip it
    try:
        for placement in placements:
            _apply(folder, placement, mode)
    finally:
        folder.close()


def _apply(folder: SortFolder, placement: Placement, mode: SortMode) -> None:
    """Place one image in the folder held open (a name its plan gave it in root); a name that
    holds it already is left, a move a kill cut short there finished."""
    try:
        folder.put(placement.source, Entry(".", Path(placement.target).name), mode)
    except OSError as error:
        raise ClipclsError(
            f"cannot {mode.value} {clean_text(placement.source)} to "
            f"{clean_text(placement.target)}: {error.strerror or error}"
        ) from None


def result_rows(
    found: Deduplication, placements: Sequence[Placement], sorting: bool
) -> tuple[tuple[str, ...], list[tuple[str | int | float | bool, ...]]]:
    """dedupe's columns and rows: one per image of each group (group, path, score, keep),
    and with sorting, where each goes (nowhere: the empty string)."""
    target = {placement.source: placement.target for placement in placements}
    columns: tuple[str, ...] = (*COLUMNS, "destination") if sorting else COLUMNS
    rows: list[tuple[str | int | float | bool, ...]] = [
        (group.number, member.path, member.score, member.keep)
        + ((target.get(member.path, ""),) if sorting else ())
        for group in found.groups
        for member in group.members
    ]
    return columns, rows


def summary(
    found: Deduplication, moved: int, sort_into: Path | None, mode: SortMode, dry_run: bool
) -> str:
    """What was found and done, in one line."""
    others = sum(len(group.others) for group in found.groups)
    said = f"{plural(len(found.groups), 'group')} of near duplicates, {others} not kept"
    if sort_into is not None:
        verb = f"would {mode.value}" if dry_run else DONE[mode]
        said += f"; {verb} {plural(moved, 'file')} into {sort_into}"
    return said
