"""Move sorted files to the label folder a review gave them (`--apply`) by label's rules: names
made unique, nothing replaced, the sort folder locked; only files inside the run's sort folder
are moved, and each move is begun and done in the ledger, so a stop at any point is finished or
forgotten by the next apply and a later change of mind moves the file again."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipcls.errors import UsageError
from clipcls.images import MARKER
from clipcls.labeling.sortfolder import Entry, SortFolder
from clipcls.labeling.sorting import SortMode, absolute, safe_folder_name, unique_destination
from clipcls.pathtext import clean_text
from clipcls.review.ledger import Ledger, Placed, applied_places, ledger_path, read_ledger
from clipcls.review.log import Decision
from clipcls.review.table import ReviewTable

__all__ = ["Applied", "apply_sorting", "applied_places", "ledger_path", "plan_sorting"]

Section = Callable[[], AbstractContextManager[Any]]


@dataclass(frozen=True)
class Move:
    """One planned move: a row's sorted file (or its link or copy) to its corrected folder."""

    index: int
    label: str
    source: Path  # where the row's sorted file is now, in the sort folder
    target: Path  # its new name in sort_into/<label>/
    original: Path | None = None  # copy/link modes: the file to place again if source is gone
    finishing: bool = False  # a move a stop cut short: the target may hold the file already


@dataclass
class Plan:
    """The moves to make, and the files left alone (gone, or outside the sort folder)."""

    moves: list[Move] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    gone: int = 0
    refused: int = 0


@dataclass(frozen=True)
class Applied:
    """What an apply did, in the sort folder it did it in."""

    root: Path
    moved: int = 0
    gone: int = 0
    refused: int = 0  # named a file outside the sort folder: never touched
    failed: int = 0
    problems: tuple[str, ...] = ()


def _sort_root(table: ReviewTable) -> Path:
    if table.sort_into is None or table.mode is None:
        why = "a --dry-run output placed no files" if table.planned else "not a --sort-into run"
        raise UsageError(f"--apply needs the output of a label run that sorted files ({why})")
    return table.sort_into


def _open_folder(table: ReviewTable) -> SortFolder:
    """The sort folder the setup record names, open; UsageError unless it is a folder a label
    run sorted into (a link in its place, or a folder without the run's marker, is refused)."""
    root = clean_text(str(_sort_root(table)))
    try:
        folder = SortFolder(_sort_root(table))
    except OSError as error:
        linked = error.errno == errno.ELOOP or os.path.islink(_sort_root(table))  # or ENOTDIR
        why = "a symbolic link now: not followed" if linked else error.strerror
        raise UsageError(f"cannot apply: the run's sort folder {root}: {why}") from None
    if not folder.marked():
        folder.close()
        raise UsageError(
            f"cannot apply: {root}, the sort folder the setup record names, holds no {MARKER}: "
            "no label run sorted into it (if it is this run's, create that file)"
        )
    return folder


def plan_sorting(
    table: ReviewTable, decisions: Mapping[int, Decision]
) -> tuple[list[Move], list[str]]:
    """The moves --apply would make (nothing is touched), and one line per file left alone."""
    with _open_folder(table) as folder:
        plan = _plan(table, decisions, folder)
    return plan.moves, plan.problems


def _plan(table: ReviewTable, decisions: Mapping[int, Decision], folder: SortFolder) -> Plan:
    placed = read_ledger(table)
    plan, taken = Plan(), set[Path]()
    for index in sorted(set(decisions) | set(placed)):
        if not 0 <= index < len(table.rows):
            continue
        row, decision = table.rows[index], decisions.get(index)
        if decision is not None and decision.path != row.path:
            decision = None  # made for another file than the row names now
        at = placed.get(index, Placed())
        if row.error is not None or (at.done or table.destination_path(index)) is None:
            continue
        label = decision.label if decision is not None else row.label
        _plan_row(plan, folder, table, index, label, at, taken)
    return plan


def _plan_row(
    plan: Plan,
    folder: SortFolder,
    table: ReviewTable,
    index: int,
    label: str,
    at: Placed,
    taken: set[Path],
) -> None:
    # Where an apply put it, else where the run did (a ledger line naming elsewhere is refused).
    current = _inside(plan, folder, at.done) or _inside(plan, folder, table.destination_path(index))
    if current is None:
        return
    begun = _inside(plan, folder, at.begun)
    if begun is not None and _cut_short(folder, current, begun):
        source, target = folder.path(current), folder.path(begun)
        plan.moves.append(Move(index, at.begun_label, source, target, finishing=True))
        taken.add(target)
        current = begun
    name = safe_folder_name(label)
    if current.folder == name:
        return  # where it belongs: never moved, or moved before
    original = None if table.mode == SortMode.MOVE.value else Path(table.file_path(index))
    if folder.lstat(current) is None and not (original and os.path.isfile(original)):
        plan.gone += 1
        where = clean_text(str(folder.path(current)))
        plan.problems.append(f"{where} is gone: not moved to {clean_text(label)}")
        return
    reusable = lambda candidate: folder.same(current, Entry(name, candidate.name))  # noqa: E731
    target = unique_destination(Path(folder.root, name), current.name, taken, reusable)
    taken.add(absolute(target))
    plan.moves.append(Move(index, label, folder.path(current), target, original))


def _inside(plan: Plan, folder: SortFolder, where: str | None) -> Entry | None:
    """The sort folder's entry that where names; None (refused, said) for any other place."""
    entry = folder.locate(where)
    if entry is None and where is not None:
        plan.refused += 1
        plan.problems.append(
            f"{clean_text(where)} is not in the sort folder {clean_text(folder.root)}: "
            "refused, not moved"
        )
    return entry


def _cut_short(folder: SortFolder, current: Entry, begun: Entry) -> bool:
    """Whether a move begun from current to begun was done (or done but for removing the old
    name): the file is at begun, and current is gone or the same file."""
    if folder.lstat(begun) is None:
        return False
    return folder.lstat(current) is None or folder.same(current, begun)


def apply_sorting(
    table: ReviewTable,
    decisions: Mapping[int, Decision],
    section: Section = contextlib.nullcontext,
) -> Applied:
    """Move each reviewed sorted file whose label changed to sort_into/<label>/ (links and
    copies are moved as they are), with the sort folder locked; each move inside one
    `section()` (the CLI's holds stop signals until it ends)."""
    with _open_folder(table) as folder:
        _claim(folder)  # no label run sorts into it meanwhile
        plan = _plan(table, decisions, folder)  # planned under the lock: nothing moves on
        moved, failed = _carry_out(table, folder, plan, section) if plan.moves else (0, 0)
    return Applied(Path(folder.root), moved, plan.gone, plan.refused, failed, tuple(plan.problems))


def _claim(folder: SortFolder) -> None:
    try:
        folder.claim()
    except OSError as error:
        where = clean_text(folder.root)
        raise UsageError(f"cannot apply: {where}: {error.strerror or error}") from None


def _carry_out(
    table: ReviewTable, folder: SortFolder, plan: Plan, section: Section
) -> tuple[int, int]:
    mode = SortMode(table.mode)
    moved, failed = set[int](), 0  # rows: finishing a stopped move, then moving on, is one
    with Ledger(table.output) as ledger:
        for move in plan.moves:
            row = table.rows[move.index]
            with section():
                ledger.record(row, move.index, move.label, move.target, done=False)
                try:
                    _move(folder, move, mode)
                except OSError as error:
                    failed += 1
                    plan.problems.append(
                        f"cannot move {clean_text(str(move.source))} to "
                        f"{clean_text(str(move.target))}: {error.strerror or error}"
                    )
                    # still where it was: the move begun is forgotten, whatever comes to its name
                    ledger.record(row, move.index, move.label, move.source, done=True)
                    continue
                ledger.record(row, move.index, move.label, move.target, done=True)
                moved.add(move.index)
    return len(moved), failed


def _move(folder: SortFolder, move: Move, mode: SortMode) -> None:
    """Move the sorted entry (a file, link or copy) to its new name; if the copy or link was
    removed since, place the original again the run's way. OSError if it cannot be done."""
    source, target = _entry(move.source), _entry(move.target)
    if folder.lstat(target) is not None:
        if folder.same(source, target):
            folder.unlink(source)  # a move a stop cut short between its two steps
        elif not (move.finishing and folder.lstat(source) is None):
            raise FileExistsError(errno.EEXIST, "file exists")
    elif folder.lstat(source) is not None:
        folder.move(source, target)
    elif move.original is not None:
        folder.place(str(move.original), target, mode)
    else:
        raise FileNotFoundError(errno.ENOENT, "gone meanwhile")


def _entry(path: Path) -> Entry:
    return Entry(path.parent.name, path.name)
