"""Write rows as a terminal table, CSV, JSON or JSONL, one image at a time."""

from __future__ import annotations

import csv
import json
from enum import Enum
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from clipcls.rows import Columns, Row, clean_text


def plain_console(**options: Any) -> Console:
    """A console that prints every string literally: file names, labels and messages come from
    outside, so `[/b]` is never markup and `:cat:` never an emoji. Style with Text and style=."""
    return Console(markup=False, emoji=False, highlight=False, **options)


class Format(str, Enum):
    """Output formats."""

    TABLE = "table"
    CSV = "csv"
    JSON = "json"
    JSONL = "jsonl"


class Writer(Protocol):
    """Receives rows in input order; close() finishes the document."""

    def write(self, row: Row) -> None: ...

    def close(self) -> None: ...


class JsonlWriter:
    """One JSON object per line, flushed per image so `| jq` sees results as they come."""

    def __init__(self, stream: TextIO, columns: Columns) -> None:
        self.stream, self.columns = stream, columns

    def write(self, row: Row) -> None:
        self.stream.write(json.dumps(self.columns.record(row), ensure_ascii=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class JsonWriter:
    """A JSON list of the JSONL objects, streamed element by element."""

    def __init__(self, stream: TextIO, columns: Columns) -> None:
        self.stream, self.columns, self.count = stream, columns, 0

    def write(self, row: Row) -> None:
        record = json.dumps(self.columns.record(row), ensure_ascii=False)
        self.stream.write(("[\n  " if self.count == 0 else ",\n  ") + record)
        self.count += 1

    def close(self) -> None:
        self.stream.write("\n]\n" if self.count else "[]\n")
        self.stream.flush()


class CsvWriter:
    """CSV with proper quoting, flushed per row; no header when appending to a resumed file."""

    def __init__(self, stream: TextIO, columns: Columns, header: bool = True) -> None:
        self.stream, self.columns = stream, columns
        self.writer = csv.writer(stream)
        if header:
            self.writer.writerow(columns.header())

    def write(self, row: Row) -> None:
        self.writer.writerow(self.columns.csv_values(row))
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


def _bar(probability: float, width: int = 10) -> Text:
    filled = round(probability * width)
    return Text("█" * filled, style="green") + Text("░" * (width - filled), style="dim")


class TableWriter:
    """A Rich table, printed once all images are in: each image with its top-k labels."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.table = Table(show_lines=False, header_style="bold")
        self.table.add_column("image", overflow="fold", ratio=3)
        self.table.add_column("label", overflow="fold", ratio=2)
        self.table.add_column("prob", justify="right", no_wrap=True)
        self.table.add_column("", no_wrap=True)

    def write(self, row: Row) -> None:
        path = clean_text(row.path)
        if row.error is not None:
            message = Text(clean_text(row.error), style="red")
            self.table.add_row(Text(path), message, "", "", end_section=True)
            return
        scores = row.scores
        for rank, score in enumerate(scores):
            label = Text(score.label, style="bold" if rank == 0 else "")
            self.table.add_row(
                Text(path if rank == 0 else ""),
                label,
                f"{score.probability:.1%}",
                _bar(score.probability),
                end_section=rank == len(scores) - 1,
            )

    def close(self) -> None:
        self.console.print(self.table)


def make_writer(fmt: Format, stream: TextIO, columns: Columns, header: bool = True) -> Writer:
    """The writer for a format, writing to stream."""
    if fmt is Format.TABLE:
        return TableWriter(plain_console(file=stream, soft_wrap=False))
    if fmt is Format.CSV:
        return CsvWriter(stream, columns, header)
    if fmt is Format.JSON:
        return JsonWriter(stream, columns)
    return JsonlWriter(stream, columns)
