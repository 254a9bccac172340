"""Read an output's rows as stored (CSV, JSONL, Parquet) without changing a byte, and refuse a
file clipcls did not write: one line naming it."""

from __future__ import annotations

import csv
import io
import json
import mmap
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipcls.errors import UsageError
from clipcls.labeling.resume import complete_length
from clipcls.output.files import SUFFIXES, Format
from clipcls.output.rows import Columns
from clipcls.pathtext import clean_text

READABLE = (Format.CSV, Format.JSONL, Format.PARQUET)
DESTINATIONS = ("destination", "planned_destination")
RANKED = re.compile(r"label_\d+")


@dataclass(frozen=True)
class Records:
    """The output's rows as stored: CSV and Parquet rows as text cells by column (as CSV has
    them, escapes undone), JSONL rows as their JSON objects."""

    kind: Format
    header: tuple[str, ...]  # the CSV/Parquet columns; () for JSONL
    records: tuple[dict[str, Any], ...]
    dropped_bytes: int = 0  # a torn last line (a run killed or still writing), left out


def foreign(output: Path, why: str) -> UsageError:
    """The refusal of a file that is not a clipcls output."""
    return UsageError(f"{clean_text(str(output))} is not a clipcls label or predict output ({why})")


def columns_of(header: list[str]) -> Columns | None:
    """The Columns whose header is exactly this one, None if clipcls writes no such header."""
    destination = next((name for name in DESTINATIONS if name in header), "")
    top_k = 1 + sum(1 for name in header if RANKED.fullmatch(name))
    flags = ("best_label" in header, "model" in header)
    columns = Columns(top_k, *flags, destination=destination, embedding="embedding" in header)
    return columns if columns.header() == header else None


def refuse_multi_label(output: Path, names: Any) -> None:
    """Review shows one label per image: a multi-label output (labels, prob:LABEL columns, or
    JSONL's probabilities) is refused in one line rather than shown wrong."""
    if "labels" in names or "probabilities" in names:
        raise UsageError(
            f"review cannot show {clean_text(str(output))}: it is a multi-label output (every "
            "label that applies per image); review reads single-label outputs"
        )


def _csv_bytes(output: Path) -> tuple[bytes, int]:
    """The file's complete records, and how many bytes a torn last line held."""
    try:
        good = complete_length(output, quoted_newlines=True)
    except UsageError:  # a line longer than any clipcls writes
        raise foreign(output, "a line longer than 1 MiB") from None
    with output.open("rb") as stream:
        data = stream.read(good)
    return data, output.stat().st_size - good


def _csv_records(output: Path) -> Records:
    from clipcls.output.csv_text import from_cell

    data, dropped = _csv_bytes(output)
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet's re-save starts with a byte-order mark
    except UnicodeDecodeError:
        raise foreign(output, "not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is not None:
            refuse_multi_label(output, header)
        if header is None or columns_of(header) is None:
            raise foreign(output, "its first line is not a clipcls CSV header")
        records = []
        for values in reader:
            if len(values) != len(header):
                raise foreign(output, f"line {reader.line_num} has {len(values)} fields")
            records.append(dict(zip(header, map(from_cell, values), strict=True)))
    except csv.Error as error:
        raise foreign(output, f"bad CSV: {error}") from None
    return Records(Format.CSV, tuple(header), tuple(records), dropped)


def _jsonl_records(output: Path, embeddings: bool) -> Records:
    with output.open("rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        if not size:
            return Records(Format.JSONL, (), ())
        # Mapped, not read: a --save-embeddings output is ~10 KB a row, nearly all of it the
        # embedding, which is skipped without being copied.
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
            complete = data.rfind(b"\n") + 1  # a kill can leave a torn last line
            records = list(_json_lines(output, data, complete, embeddings))
    return Records(Format.JSONL, (), tuple(records), size - complete)


def _json_lines(
    output: Path, data: mmap.mmap, end: int, embeddings: bool
) -> Iterator[dict[str, Any]]:
    start, number = 0, 0
    while start < end:
        stop, number = data.find(b"\n", start, end), number + 1
        # The embedding comes last in a record: the record without it is what review needs.
        # Its key cannot occur inside a JSON string, whose quotes are escaped.
        cut = -1 if embeddings else data.rfind(EMBEDDING_KEY, start, stop)
        line = data[start:cut] + b"}" if cut > start else data[start:stop]
        start = stop + 1
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # also a UnicodeDecodeError: not UTF-8 text
            raise foreign(output, f"line {number} is not JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("path"), str):
            raise foreign(output, f"line {number} is not a record with a path")
        refuse_multi_label(output, record)
        yield record


EMBEDDING_KEY = b', "embedding": '


def _parquet_records(output: Path) -> Records:
    from clipcls.output.csv_text import is_number_column
    from clipcls.output.writers import require_parquet

    _, pq = require_parquet()
    try:
        header = pq.read_schema(output).names
        refuse_multi_label(output, header)
        if columns_of(header) is None:
            raise foreign(output, "not the columns clipcls writes")
        table = pq.read_table(output, columns=[name for name in header if name != "embedding"])
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise foreign(output, (clean_text(str(error)).splitlines() or ["unreadable"])[0]) from None
    records = []
    for values in table.to_pylist():
        cells = {}
        for name, value in values.items():
            if value is None:
                cells[name] = ""
            else:
                cells[name] = f"{value:.6f}" if is_number_column(name) else str(value)
        records.append(cells)
    return Records(Format.PARQUET, tuple(header), tuple(records))


def read_records(output: Path, embeddings: bool = False) -> Records:
    """The output's rows as stored (JSONL ones with their embeddings only if asked: reading them
    is most of the time); UsageError for a missing file or one clipcls did not write."""
    kind = SUFFIXES.get(output.suffix.lower())
    if kind not in READABLE:
        raise UsageError(
            f"review reads .csv, .jsonl or .parquet outputs, not {clean_text(str(output))}"
        )
    if not output.is_file():
        raise UsageError(f"no such output file: {clean_text(str(output))}")
    try:
        if kind is Format.CSV:
            return _csv_records(output)
        if kind is Format.JSONL:
            return _jsonl_records(output, embeddings)
        return _parquet_records(output)
    except OSError as error:
        raise UsageError(
            f"cannot read {clean_text(str(output))}: {error.strerror or error}"
        ) from None
