"""Resuming a label output: read which files are done and where they went, without changing
a byte, and refuse a file clipcls did not write."""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipcls.errors import UsageError
from clipcls.output.formats import Format
from clipcls.output.reading import Unreadable
from clipcls.output.rows import SEPARATOR, Columns
from clipcls.pathtext import path_key, text_to_path
from clipcls.remote import is_url

PENDING_WINDOW = 1024


@dataclass(frozen=True)
class RecordedRow:
    """What resuming needs from a row already in the file: real paths, usable from here."""

    path: str
    destination: str  # multi-label: its places joined by ;


@dataclass
class Recovered:
    """What an existing output holds, read without changing it."""

    done: set[str] = field(default_factory=set)  # pathtext.path_key of every row's file
    # key -> destination of the latest row with one; kept for moves and dry runs
    destinations: dict[str, str] = field(default_factory=dict)
    # Each row is written before its file is placed, so only the last rows can be unplaced.
    placements: deque[RecordedRow] = field(default_factory=lambda: deque(maxlen=PENDING_WINDOW))
    complete_bytes: int = 0
    dropped_bytes: int = 0
    rows: int = 0


def _foreign(path: Path, why: str) -> UsageError:
    return UsageError(
        f"{path} is not a clipcls label output ({why}); nothing was changed: "
        "name another --output, or use --overwrite to replace it"
    )


def _check_header(path: Path, found: tuple[str, ...] | None, columns: Columns) -> None:
    """A flat output's columns must be this run's (JSONL has no header: found is None)."""
    header = columns.header()
    if found is not None and list(found) != header:
        raise UsageError(
            f"{path} has columns {','.join(found)}; this run writes {','.join(header)}. "
            "Resume with the same --top-k, --threshold and --sort-into, or use --overwrite"
        )


def recover(
    path: Path, kind: Format, columns: Columns, cwd: str, keep_destinations: bool
) -> Recovered:
    """Read which files are done and where they went; raise UsageError for a foreign file.

    The file is only read: a partial last line (from a hard kill) is measured, not dropped.
    Relative paths in the rows are taken from cwd, the folder the recorded run started in.
    """
    state = Recovered()
    try:
        stored = kind.read(path)
        state.complete_bytes, state.dropped_bytes = stored.complete_bytes, stored.dropped_bytes
        _check_header(path, stored.header, columns)
        for record in stored.rows:
            _take(state, record, path, columns, cwd, keep_destinations)
    except Unreadable as error:
        raise _foreign(path, error.why) from None
    return state


def _take(
    state: Recovered,
    record: dict[str, Any],
    path: Path,
    columns: Columns,
    cwd: str,
    keep_destinations: bool,
) -> None:
    """Count one recorded row as done, and where its file went."""
    wanted = columns.destination
    if wanted and not isinstance(record.get(wanted), str):
        raise UsageError(f"{path} has no {wanted!r} field: use --overwrite")
    state.rows += 1
    recorded = text_to_path(record["path"])
    real = recorded if is_url(recorded) else os.path.join(cwd, recorded)
    key = path_key(real)
    state.done.add(key)
    destination = record.get(wanted, "") if wanted else ""
    if destination:
        places = destination.split(SEPARATOR) if columns.multi_label else [destination]
        where = SEPARATOR.join(os.path.join(cwd, text_to_path(one)) for one in places)
        state.placements.append(RecordedRow(real, where))
        if keep_destinations:
            state.destinations[key] = where
