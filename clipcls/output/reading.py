"""Reading an output's rows back as stored, without changing a byte: its complete records only (a
killed run can leave a torn last one), and a refusal saying why a file is not one clipcls wrote.
Resume, review and --from-embeddings all read through here (by way of output.formats)."""

from __future__ import annotations

import csv
import json
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from clipcls.errors import UsageError
from clipcls.output.csv_text import from_cell, is_number_column
from clipcls.pathtext import clean_text
from clipcls.regular import NotRegular, open_regular

MAX_LINE = 1 << 20  # longer lines are not ours: paths end at 4 KiB, embeddings at ~30 KiB
EMBEDDING_KEY = b', "embedding": '  # a JSONL row's last field, when it has one


class Unreadable(UsageError):
    """A file whose bytes are not rows clipcls writes; why says what is wrong, for the caller
    to say in its own words (resume, review and --from-embeddings each say what to do)."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{clean_text(str(path))} is not a clipcls output ({why})")
        self.why = why


@dataclass
class Position:
    """Where the row a Stored yielded last lies, from 1: its line (CSV's last, for a record
    that spans lines; JSONL), or its row (Parquet), for an error that names it."""

    number: int = 0
    unit: str = "line"

    def of(self, path: Path) -> str:
        """`FILE:LINE`, or `FILE row N`."""
        where = clean_text(str(path))
        return f"{where}:{self.number}" if self.unit == "line" else f"{where} row {self.number}"


@dataclass(frozen=True)
class Stored:
    """An output's rows as stored: CSV and Parquet rows as text cells by column (as CSV holds
    them, escapes undone), JSONL rows as their JSON objects; read lazily, in file order."""

    header: tuple[str, ...] | None  # CSV's first line, Parquet's columns; None: none (JSONL)
    rows: Iterator[dict[str, Any]]
    complete_bytes: int  # where the complete records end: an append goes on from here
    dropped_bytes: int = 0  # a torn last line (a run killed or still writing), left out
    position: Position = field(default_factory=Position)  # of the row read last


def require_parquet() -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet, or a UsageError with the install line."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UsageError("Parquet output needs pyarrow: pip install 'clipcls[parquet]'") from None
    return pyarrow, pyarrow.parquet


def _opened(path: Path) -> BinaryIO:
    """path opened for reading, refused unless a regular file: checked on the open file, so a
    FIFO or /dev/zero swapped in after a caller's check neither blocks nor reads forever."""
    try:
        return open_regular(path)
    except NotRegular as error:
        raise Unreadable(path, error.strerror or "not a regular file") from None


def _lines(path: Path, end: int | None = None) -> Iterator[bytes]:
    """The file's lines, each at most MAX_LINE bytes, up to byte `end`."""
    position = 0
    with _opened(path) as stream:
        while end is None or position < end:
            line = stream.readline(MAX_LINE + 1)
            if not line:
                return
            if len(line) > MAX_LINE:
                raise Unreadable(path, f"a line longer than {MAX_LINE >> 20} MiB")
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
            raise Unreadable(path, "not UTF-8 text") from None


def read_csv(path: Path) -> Stored:
    """A CSV output's header and rows, up to its last complete record."""
    end = complete_length(path, quoted_newlines=True)
    size = path.stat().st_size  # after: a file still being written only grows
    reader = csv.reader(_text_lines(path, end))
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise Unreadable(path, f"bad CSV: {error}") from None
    if header is None:
        return Stored(None, iter(()), end, size - end)
    position = Position()
    rows = _csv_rows(path, reader, header, position)
    return Stored(tuple(header), rows, end, size - end, position)


def _csv_rows(
    path: Path, reader: Any, header: list[str], position: Position
) -> Iterator[dict[str, str]]:
    try:
        for values in reader:
            position.number = reader.line_num
            if len(values) != len(header):
                raise Unreadable(path, f"line {reader.line_num} has {len(values)} fields")
            yield dict(zip(header, map(from_cell, values), strict=True))
    except csv.Error as error:
        raise Unreadable(path, f"bad CSV: {error}") from None


def read_jsonl(path: Path, embeddings: bool = False) -> Stored:
    """A JSONL output's records up to its last newline; each one's embedding only if asked
    (reading them is most of the time, and only --from-embeddings needs them)."""
    with _opened(path) as stream:
        size = os.fstat(stream.fileno()).st_size
        if not size:
            return Stored(None, iter(()), 0)
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
            complete = data.rfind(b"\n") + 1
    position = Position()
    rows = _json_rows(path, complete, embeddings, position)
    return Stored(None, rows, complete, size - complete, position)


def _json_rows(
    path: Path, end: int, embeddings: bool, position: Position
) -> Iterator[dict[str, Any]]:
    if not end:
        return
    # Mapped, not read: a --save-embeddings output is ~10 KB a row, nearly all of it the
    # embedding, which is skipped without being copied where it is not asked for.
    with _opened(path) as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
        start, number = 0, 0
        while start < end:
            stop, number = data.find(b"\n", start, end), number + 1
            if stop + 1 - start > MAX_LINE:
                raise Unreadable(path, f"a line longer than {MAX_LINE >> 20} MiB")
            # The embedding comes last in a record: without it, the record is what most need.
            # Its key cannot occur inside a JSON string, whose quotes are escaped.
            cut = -1 if embeddings else data.rfind(EMBEDDING_KEY, start, stop)
            line = data[start:cut] + b"}" if cut > start else data[start:stop]
            start = stop + 1
            if not line.strip():
                continue
            try:  # a byte-order mark may start the file, as in CSV
                text = line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise Unreadable(path, "not UTF-8 text") from None
            try:
                record = json.loads(text)
            except ValueError:
                raise Unreadable(path, f"line {number} is not JSON") from None
            if not isinstance(record, dict) or not isinstance(record.get("path"), str):
                raise Unreadable(path, f"line {number} is not a record with a path")
            position.number = number
            yield record


def _pyarrow_refusal(path: Path, error: Exception) -> Unreadable:
    return Unreadable(path, (clean_text(str(error)).splitlines() or ["unreadable"])[0])


def read_parquet(path: Path, embeddings: bool = False) -> Stored:
    """A Parquet output's columns and rows, each cell as CSV would hold it (numbers with six
    decimals, empty for none); the embedding column, as a list of floats, only if asked."""
    _, pq = require_parquet()
    try:
        with _opened(path) as stream:
            header = tuple(pq.read_schema(stream).names)
            size = os.fstat(stream.fileno()).st_size
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise _pyarrow_refusal(path, error) from None
    position = Position(unit="row")
    return Stored(header, _parquet_rows(path, header, embeddings, position), size, 0, position)


def _parquet_rows(
    path: Path, header: tuple[str, ...], embeddings: bool, position: Position
) -> Iterator[dict[str, Any]]:
    _, pq = require_parquet()
    wanted = [name for name in header if name != "embedding" or embeddings]
    try:
        with _opened(path) as stream:
            table = pq.read_table(stream, columns=wanted)
    except (OSError, ValueError) as error:
        raise _pyarrow_refusal(path, error) from None
    for number, values in enumerate(table.to_pylist(), start=1):
        position.number = number
        cells: dict[str, Any] = {}
        for name, value in values.items():
            if name == "embedding":
                cells[name] = value
            elif value is None:
                cells[name] = ""
            else:
                cells[name] = f"{value:.6f}" if is_number_column(name) else str(value)
        yield cells
