"""Label output files: pick CSV or JSONL, refuse to clobber, and recover a file to resume it."""

from __future__ import annotations

import csv
import json
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from clipcls.errors import ClipclsError, UsageError
from clipcls.rows import Columns


class OutputKind(str, Enum):
    """Formats a label run can append to."""

    CSV = "csv"
    JSONL = "jsonl"


PENDING_WINDOW = 1024
SUFFIXES = {".csv": OutputKind.CSV, ".jsonl": OutputKind.JSONL, ".ndjson": OutputKind.JSONL}


def output_kind(path: Path, explicit: OutputKind | None) -> OutputKind:
    """The format: --format if given, else from the file extension."""
    if explicit is not None:
        return explicit
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UsageError(f"cannot tell the format of {path} from its name: use --format csv|jsonl")
    return kind


def check_writable(path: Path) -> None:
    """Fail before any model loads if the output file cannot be created or appended to."""
    if path.is_dir():
        raise UsageError(f"--output {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise UsageError(f"--output folder does not exist: {path.parent}")
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        raise UsageError(f"cannot write {path}: permission denied")


def check_target(path: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to replace an existing output unless told to resume or overwrite it."""
    if resume and overwrite:
        raise UsageError("give --resume or --overwrite, not both")
    check_writable(path)
    if path.exists() and path.stat().st_size > 0 and not (resume or overwrite):
        raise UsageError(
            f"{path} already exists: add --resume to continue it or --overwrite to replace it"
        )


@dataclass(frozen=True)
class RecordedRow:
    """What resuming needs from a row already in the file."""

    path: str
    model: str
    destination: str


@dataclass
class Recovered:
    """The state of an existing output file, after dropping any partial last line."""

    done: set[str] = field(default_factory=set)
    # Each row is written before its file is placed, so only the last rows can be unplaced.
    placements: deque[RecordedRow] = field(default_factory=lambda: deque(maxlen=PENDING_WINDOW))
    dropped_bytes: int = 0
    has_header: bool = False
    models: set[str] = field(default_factory=set)


def complete_length(path: Path, quoted_newlines: bool) -> int:
    """Byte length of the file's complete records; a hard kill can leave a partial last one."""
    good = position = 0
    quotes = 0
    with path.open("rb") as stream:
        for line in stream:
            position += len(line)
            # In CSV a newline inside quotes is data: a record ends where the quote count is even.
            quotes += line.count(b'"') if quoted_newlines else 0
            if line.endswith(b"\n") and quotes % 2 == 0:
                good = position
    return good


def _truncate_partial(path: Path, quoted_newlines: bool) -> int:
    size = path.stat().st_size
    good = complete_length(path, quoted_newlines)
    if good < size:
        os.truncate(path, good)
    return size - good


def _recorded(record: dict[str, str], columns: Columns) -> RecordedRow:
    destination = record.get(columns.destination, "") if columns.destination else ""
    return RecordedRow(record["path"], record.get("model", ""), destination)


def _csv_rows(path: Path, columns: Columns) -> Iterator[RecordedRow]:
    header = columns.header()
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream)
        found = next(reader, None)
        if found is None:
            return
        if found != header:
            raise UsageError(
                f"{path} has columns {','.join(found)}; this run writes {','.join(header)}. "
                "Resume with the same --top-k, --threshold and --sort-into, or use --overwrite"
            )
        for values in reader:
            yield _recorded(dict(zip(header, values, strict=False)), columns)


def _jsonl_rows(path: Path, columns: Columns) -> Iterator[RecordedRow]:
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise ClipclsError(f"{path}:{number} is not a JSON line; cannot resume") from None
            if columns.destination and columns.destination not in record:
                raise UsageError(f"{path} has no {columns.destination!r} field: use --overwrite")
            yield _recorded(record, columns)


def recover(path: Path, kind: OutputKind, columns: Columns) -> Recovered:
    """Drop a partial last line and read which images are done and where files went."""
    state = Recovered()
    if not path.exists():
        return state
    state.dropped_bytes = _truncate_partial(path, quoted_newlines=kind is OutputKind.CSV)
    rows = _csv_rows(path, columns) if kind is OutputKind.CSV else _jsonl_rows(path, columns)
    for row in rows:
        state.done.add(row.path)
        state.models.add(row.model)
        if row.destination:
            state.placements.append(row)
    state.has_header = kind is OutputKind.CSV and path.stat().st_size > 0
    return state
