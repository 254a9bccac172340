"""Resuming a label output: read which files are done and where they went, without changing
a byte, and refuse a file clipcls did not write."""

from __future__ import annotations

import csv
import json
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from clipcls.errors import UsageError
from clipcls.output.csv_text import from_cell
from clipcls.output.files import Format
from clipcls.output.rows import SEPARATOR, Columns
from clipcls.pathtext import path_key, text_to_path
from clipcls.remote import is_url

PENDING_WINDOW = 1024


MAX_LINE = 1 << 20  # longer lines are not ours: paths end at 4 KiB


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


def _lines(path: Path, end: int | None = None) -> Iterator[bytes]:
    """The file's lines, each at most MAX_LINE bytes, up to byte `end`."""
    position = 0
    with path.open("rb") as stream:
        while end is None or position < end:
            line = stream.readline(MAX_LINE + 1)
            if not line:
                return
            if len(line) > MAX_LINE:
                raise _foreign(path, f"a line longer than {MAX_LINE >> 20} MiB")
            position += len(line)
            yield line


def complete_length(path: Path, quoted_newlines: bool) -> int:
    """Byte length of the file's complete records; a hard kill can leave a partial last one."""
    good = position = 0
    quotes = 0
    for line in _lines(path):
        position += len(line)
        # In CSV a newline inside quotes is data: a record ends where the quote count is even.
        quotes += line.count(b'"') if quoted_newlines else 0
        if line.endswith(b"\n") and quotes % 2 == 0:
            good = position
    return good


def _text_lines(path: Path, end: int) -> Iterator[str]:
    for number, line in enumerate(_lines(path, end)):
        try:  # a spreadsheet's re-save ("CSV UTF-8") starts the file with a byte-order mark
            yield line.decode("utf-8-sig" if number == 0 else "utf-8")
        except UnicodeDecodeError:
            raise _foreign(path, "not UTF-8 text") from None


def _csv_records(path: Path, columns: Columns, end: int) -> Iterator[dict[str, str]]:
    header = columns.header()
    reader = csv.reader(_text_lines(path, end))
    try:
        found = next(reader, None)
        if found is None:
            return
        if found != header:
            raise UsageError(
                f"{path} has columns {','.join(found)}; this run writes {','.join(header)}. "
                "Resume with the same --top-k, --threshold and --sort-into, or use --overwrite"
            )
        for values in reader:
            if len(values) != len(header):
                raise _foreign(path, f"line {reader.line_num} has {len(values)} fields")
            yield dict(zip(header, map(from_cell, values), strict=True))
    except csv.Error as error:
        raise _foreign(path, f"bad CSV: {error}") from None


def _jsonl_records(path: Path, columns: Columns, end: int) -> Iterator[dict[str, str]]:
    for number, line in enumerate(_text_lines(path, end), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise _foreign(path, f"line {number} is not JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("path"), str):
            raise _foreign(path, f"line {number} has no path")
        wanted = columns.destination
        if wanted and not isinstance(record.get(wanted), str):
            raise UsageError(f"{path} has no {wanted!r} field: use --overwrite")
        yield record


def recover(
    path: Path, kind: Format, columns: Columns, cwd: str, keep_destinations: bool
) -> Recovered:
    """Read which files are done and where they went; raise UsageError for a foreign file.

    The file is only read: a partial last line (from a hard kill) is measured, not dropped.
    Relative paths in the rows are taken from cwd, the folder the recorded run started in.
    """
    state = Recovered()
    size = path.stat().st_size
    state.complete_bytes = complete_length(path, quoted_newlines=kind is Format.CSV)
    state.dropped_bytes = size - state.complete_bytes
    reader = _csv_records if kind is Format.CSV else _jsonl_records
    for record in reader(path, columns, state.complete_bytes):
        state.rows += 1
        recorded = text_to_path(record["path"])
        real = recorded if is_url(recorded) else os.path.join(cwd, recorded)
        key = path_key(real)
        state.done.add(key)
        destination = record.get(columns.destination, "") if columns.destination else ""
        if destination:
            places = destination.split(SEPARATOR) if columns.multi_label else [destination]
            where = SEPARATOR.join(os.path.join(cwd, text_to_path(one)) for one in places)
            state.placements.append(RecordedRow(real, where))
            if keep_destinations:
                state.destinations[key] = where
    return state
