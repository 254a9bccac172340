"""Flat result rows (search hits, duplicate groups) as a terminal table, CSV, JSON or JSONL
(output.formats picks which), by the label rows' rules: paths through path_to_text (undecodable
bytes as \\xNN), CSV text cells escaped against formulas, control characters shown escaped."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from rich.console import RenderableType
from rich.table import Table

from clipcls.output.csv_text import SafeCsv
from clipcls.output.rows import printable
from clipcls.output.writers import FoldedPath, plain_console
from clipcls.pathtext import path_to_text

Cell = str | int | float | bool
PATHS = ("path", "destination")  # the columns holding file paths (dedupe's: where it went)
DECIMALS = 6  # a score's digits in files (cosines differ in the 4th place between neighbours)


def _file_value(name: str, value: Cell) -> Cell:
    """A cell as files hold it: paths escaped, scores rounded."""
    if name in PATHS:
        return path_to_text(str(value))
    if isinstance(value, float):
        return round(value, DECIMALS)
    return value


def _csv_text(value: Cell) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.{DECIMALS}f}"
    return str(value)


def _table_cell(name: str, value: Cell) -> RenderableType:
    if name in PATHS:
        return FoldedPath(printable(str(value)))
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return printable(str(value))


def table_records(stream: TextIO, columns: Sequence[str], rows: list[Sequence[Cell]]) -> None:
    """The records as a terminal table: numbers right-aligned, paths folded at a `/`."""
    table = Table(header_style="bold")
    for name in columns:
        numeric = bool(rows) and not isinstance(rows[0][columns.index(name)], str)
        table.add_column(name, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(_table_cell(n, v) for n, v in zip(columns, row, strict=True)))
    plain_console(file=stream, soft_wrap=False).print(table)


def csv_records(stream: TextIO, columns: Sequence[str], rows: list[Sequence[Cell]]) -> None:
    """The records as CSV with a header; a column is a number column if its first row's is."""
    numbers = [not isinstance(value, str) for value in rows[0]] if rows else None
    writer = SafeCsv(stream, columns, numbers)
    writer.header(columns)
    for row in rows:
        writer.row([_csv_text(_file_value(n, v)) for n, v in zip(columns, row, strict=True)])


def json_records(
    stream: TextIO, columns: Sequence[str], rows: list[Sequence[Cell]], lines: bool
) -> None:
    """The records as JSON objects: one a line (lines), else one JSON list."""
    objects = [
        json.dumps(
            {n: _file_value(n, v) for n, v in zip(columns, row, strict=True)},
            ensure_ascii=False,
        )
        for row in rows
    ]
    if lines:
        stream.write("".join(line + "\n" for line in objects))
    else:
        stream.write("[\n  " + ",\n  ".join(objects) + "\n]\n" if objects else "[]\n")
