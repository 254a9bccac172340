"""Flat result rows (search hits, duplicate groups) as a terminal table, CSV, JSON or JSONL,
by the label rows' rules: paths through path_to_text (undecodable bytes as \\xNN), CSV text
cells escaped against formulas, control characters shown escaped on a terminal."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TextIO

from rich.console import RenderableType
from rich.table import Table

from clipcls.errors import ClipclsError
from clipcls.output.csv_text import SafeCsv
from clipcls.output.files import Format
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


def write_records(
    kind: Format,
    stream: TextIO,
    columns: Sequence[str],
    records: Iterable[Sequence[Cell]],
    where: str = "stdout",
) -> None:
    """Write each record (one value per column; text columns are str, the others numbers
    or flags) in kind: a table, CSV with a header, JSON lines, or a JSON list. A write error
    (a full disk) becomes one ClipclsError naming where; a closed pipe (`| head`) goes on up."""
    try:
        _write(kind, stream, columns, list(records))
    except BrokenPipeError:
        raise
    except OSError as error:
        raise ClipclsError(f"cannot write {where}: {error.strerror or error}") from None


def _write(
    kind: Format, stream: TextIO, columns: Sequence[str], rows: list[Sequence[Cell]]
) -> None:
    if kind is Format.TABLE:
        table = Table(header_style="bold")
        for name in columns:
            numeric = bool(rows) and not isinstance(rows[0][columns.index(name)], str)
            table.add_column(name, justify="right" if numeric else "left")
        for row in rows:
            table.add_row(*(_table_cell(n, v) for n, v in zip(columns, row, strict=True)))
        plain_console(file=stream, soft_wrap=False).print(table)
    elif kind is Format.CSV:
        numbers = [not isinstance(value, str) for value in rows[0]] if rows else None
        writer = SafeCsv(stream, columns, numbers)
        writer.header(columns)
        for row in rows:
            writer.row([_csv_text(_file_value(n, v)) for n, v in zip(columns, row, strict=True)])
    else:
        objects = [
            json.dumps(
                {n: _file_value(n, v) for n, v in zip(columns, row, strict=True)},
                ensure_ascii=False,
            )
            for row in rows
        ]
        if kind is Format.JSONL:
            stream.write("".join(line + "\n" for line in objects))
        else:
            stream.write("[\n  " + ",\n  ".join(objects) + "\n]\n" if objects else "[]\n")
    stream.flush()
