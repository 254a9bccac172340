"""Move sorted files to the label folder a review gave them (`--apply`) by label's rules: names
made unique, nothing replaced, the sort folder locked. A ledger beside the output records each
move, so a second apply does nothing more and a later change of mind moves the file again."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from clipcls.errors import UsageError
from clipcls.labeling.sorting import (
    SortMode,
    absolute,
    claim_sort_folder,
    is_unfinished_move,
    place,
    safe_folder_name,
    unique_destination,
)
from clipcls.pathtext import clean_text, path_to_text, text_to_path
from clipcls.review.log import Decision
from clipcls.review.table import ReviewTable

LEDGER_SUFFIX = ".review-applied.jsonl"


@dataclass(frozen=True)
class Move:
    """One planned move: a row's sorted file (or its link or copy) to its corrected folder."""

    index: int
    label: str
    source: Path  # where the row's sorted file is now
    target: Path  # its new name in sort_into/<label>/
    original: Path | None = None  # copy/link modes: the file to place again if source is gone


def ledger_path(output: Path) -> Path:
    """Where the moves an apply made are recorded."""
    return output.with_name(output.name + LEDGER_SUFFIX)


def applied_places(table: ReviewTable) -> dict[int, str]:
    """Where earlier applies put each row's file (the latest), for rows still naming that file;
    a line cut short by a kill is ignored (its move is found again as unfinished)."""
    path = ledger_path(table.output)
    try:
        # Non-blocking: a FIFO by that name is refused, not waited on for ever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise UsageError(f"cannot read {clean_text(str(path))}: {error.strerror}") from None
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{clean_text(str(path))} is not a regular file")
        lines = stream.read().split(b"\n")
    where: dict[int, str] = {}
    for line in lines:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            record = json.loads(line)
            index = int(record["index"])
            if 0 <= index < len(table.rows) and table.rows[index].path == record["path"]:
                where[index] = text_to_path(str(record["to"]))
    return where


def _sort_root(table: ReviewTable) -> Path:
    if table.sort_into is None or table.mode is None:
        why = "a --dry-run output placed no files" if table.planned else "not a --sort-into run"
        raise UsageError(f"--apply needs the output of a label run that sorted files ({why})")
    return table.sort_into


def _is_in(path: Path, folder: Path) -> bool:
    return os.path.realpath(path.parent) == os.path.realpath(folder)


def plan_sorting(
    table: ReviewTable, decisions: Mapping[int, Decision]
) -> tuple[list[Move], list[str]]:
    """The moves --apply would make (nothing is touched), and one line per file left alone."""
    root = _sort_root(table)
    moved = applied_places(table)
    taken: set[Path] = set()
    moves, problems = [], []
    for index in sorted(set(decisions) | set(moved)):
        if not 0 <= index < len(table.rows):
            continue
        row, decision = table.rows[index], decisions.get(index)
        if decision is not None and decision.path != row.path:
            decision = None  # made for another file than the row names now
        placed = moved.get(index) or table.destination_path(index)
        if row.error is not None or placed is None:
            continue
        label = decision.label if decision is not None else row.label
        folder, source = root / safe_folder_name(label), Path(placed)
        if _is_in(source, folder):
            continue  # where it belongs: never moved, or moved before
        original = None if table.mode == SortMode.MOVE.value else Path(table.file_path(index))
        if not os.path.lexists(source) and not (original and os.path.isfile(original)):
            problems.append(f"{clean_text(str(source))} is gone: not moved to {clean_text(label)}")
            continue
        reusable = partial(is_unfinished_move, source)  # a move a kill cut short
        target = unique_destination(folder, source.name, taken, reusable)
        taken.add(absolute(target))
        moves.append(Move(index, label, source, target, original))
    return moves, problems


def _carry_out(move: Move, mode: SortMode) -> None:
    """Move the sorted entry (a file, link or copy) to its new name; if the copy or link was
    removed since, place the original again the run's way."""
    if os.path.lexists(move.target):
        if not is_unfinished_move(move.source, move.target):
            raise FileExistsError(f"{move.target} exists")
        os.unlink(move.source)
    elif os.path.lexists(move.source):
        place(move.source, move.target, SortMode.MOVE)
    elif move.original is not None:
        place(move.original, move.target, mode)


def apply_sorting(table: ReviewTable, decisions: Mapping[int, Decision]) -> list[str]:
    """Move each reviewed sorted file whose label changed to sort_into/<label>/ (links and
    copies are moved as they are); return one line per file that could not be moved."""
    moves, problems = plan_sorting(table, decisions)
    if not moves:
        return problems
    mode = SortMode(table.mode)
    fd = claim_sort_folder(_sort_root(table))  # no label run sorts into it meanwhile
    try:
        with ledger_path(table.output).open("a", encoding="ascii") as ledger:
            for move in moves:
                try:
                    _carry_out(move, mode)
                except OSError as error:
                    problems.append(
                        f"cannot move {clean_text(str(move.source))} to "
                        f"{clean_text(str(move.target))}: {error.strerror or error}"
                    )
                    continue
                row = table.rows[move.index]
                to = path_to_text(str(absolute(move.target)))
                record = {"index": move.index, "path": row.path, "label": move.label, "to": to}
                ledger.write(json.dumps(record) + "\n")
                ledger.flush()
                os.fsync(ledger.fileno())
    finally:
        os.close(fd)
    return problems
