"""Write rows as a terminal table, CSV, JSON, JSONL or Parquet, one image at a time (each format's
writer, opened by output.formats)."""

from __future__ import annotations

import json
import re
from typing import Any, BinaryIO, Protocol, TextIO

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from clipcls.output.csv_text import SafeCsv, is_number_column
from clipcls.output.reading import require_parquet
from clipcls.output.rows import Columns, Row, printable


def plural(count: int, noun: str) -> str:
    """`1 image`, `2 images`, `1,200 images`."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def plain_console(**options: Any) -> Console:
    """A console that prints every string literally: file names, labels and messages come from
    outside, so `[/b]` is never markup and `:cat:` never an emoji. Style with Text and style=."""
    return Console(markup=False, emoji=False, highlight=False, **options)


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
    """CSV that spreadsheets read as text and --resume reads back (csv_text), flushed per row;
    no header when appending to a resumed file."""

    def __init__(self, stream: TextIO, columns: Columns, header: bool = True) -> None:
        self.stream, self.columns = stream, columns
        self.writer = SafeCsv(stream, columns.header())
        if header:
            self.writer.header(columns.header())

    def write(self, row: Row) -> None:
        self.writer.row(self.columns.csv_values(row))
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


class FoldedPath:
    """A path that breaks after a `/` to fit its column, never inside a name (unless one name
    alone is wider than the column)."""

    def __init__(self, path: str) -> None:
        self.parts = re.findall(r"[^/]*/|[^/]+", path) or [""]

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        widths = [cell_len(part) for part in self.parts]
        return Measurement(max(widths), sum(widths))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines, line = [], ""
        for part in self.parts:
            if line and cell_len(line + part) > options.max_width:
                lines.append(line)
                line = ""
            line += part
        yield Text("\n".join([*lines, line]), overflow="fold")


NARROW = 80  # below this many columns the probability bars give way to the paths


def _bar(probability: float, ascii_only: bool, width: int = 10) -> Text:
    full, empty = "#." if ascii_only else "█░"  # as Rich draws the table's box in ASCII
    filled = round(probability * width)
    return Text(full * filled, style="green") + Text(empty * (width - filled), style="dim")


class TableWriter:
    """A Rich table, printed once all images are in: each image with its top-k labels."""

    def __init__(self, console: Console, multi_label: bool = False) -> None:
        self.console, self.multi_label = console, multi_label
        self.rows: list[Row] = []

    def write(self, row: Row) -> None:
        self.rows.append(row)

    def close(self) -> None:
        bars = self.console.width >= NARROW
        table = Table(show_lines=False, header_style="bold")
        table.add_column("image", ratio=3)
        table.add_column("label", overflow="fold", ratio=2)
        table.add_column("prob", justify="right", no_wrap=True)
        if bars:
            table.add_column("", no_wrap=True)
        for row in self.rows:
            path = FoldedPath(printable(row.path))
            if row.error is not None:
                message = Text(printable(row.error), style="red")
                table.add_row(path, message, "", *([""] if bars else []), end_section=True)
                continue
            scores = row.scores
            if self.multi_label:  # the labels that apply, each with its own probability
                scores = tuple(score for score in row.scores if score.label in row.labels)
                if not scores:
                    none = Text(printable(row.label) or "(no label)", style="dim")
                    table.add_row(path, none, "", *([""] if bars else []), end_section=True)
                    continue
            below = not self.multi_label and bool(scores) and row.label != scores[0].label
            for rank, score in enumerate(scores):
                name = Text(printable(score.label), style="bold" if rank == 0 and not below else "")
                if below and rank == 0:  # under its threshold: the unknown label, then the scores
                    name = Text.assemble((printable(row.label), "bold"), " (", name, ")")
                cells: list[RenderableType] = [
                    path if rank == 0 else "",
                    name,
                    f"{score.probability:.1%}",
                ]
                cells += [_bar(score.probability, self.console.options.ascii_only)] if bars else []
                table.add_row(*cells, end_section=rank == len(scores) - 1)
        self.console.print(table)


class ParquetWriter:
    """Parquet through pyarrow, a row group every ROW_GROUP rows, so memory stays flat; the
    footer is written by close(), so a killed run leaves no readable file (and no resume)."""

    ROW_GROUP = 4096

    def __init__(self, stream: BinaryIO, columns: Columns) -> None:
        pa, pq = require_parquet()
        self.pa, self.columns = pa, columns
        self.pending: list[dict[str, Any]] = []
        fields = [
            (name, pa.float64() if is_number_column(name) else pa.string())
            for name in columns.header()
            if name != "embedding"
        ]
        fields += [("embedding", pa.list_(pa.float32()))] if columns.embedding else []
        self.schema = pa.schema(fields)
        self.writer = pq.ParquetWriter(stream, self.schema)

    def write(self, row: Row) -> None:
        self.pending.append(self.columns.typed_values(row))
        if len(self.pending) >= self.ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            table = self.pa.Table.from_pylist(self.pending, schema=self.schema)
            self.writer.write_table(table)
            self.pending = []

    def close(self) -> None:
        self._flush()
        self.writer.close()
