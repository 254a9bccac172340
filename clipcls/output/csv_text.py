"""CSV as spreadsheets and `--resume` both read it safely: a text cell a spreadsheet would run as
a formula gets a leading `'`, a row holding a carriage return is quoted, and both are undone
exactly on reading."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import TextIO

# What starts a formula (OWASP's CSV-injection list), and the quote itself, so that a cell that
# really starts with `'` gets a second one and every escaped cell reads back to exactly one text.
ESCAPED_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def is_number_column(name: str) -> bool:
    """Whether a column holds numbers clipcls formatted (a negative one stays a number)."""
    return name.startswith(("probability", "similarity", "prob:"))


def to_cell(text: str) -> str:
    """A text cell a spreadsheet shows as text: `'` before a formula's first character."""
    return "'" + text if text.startswith(ESCAPED_STARTS) else text


def from_cell(cell: str) -> str:
    """Undo to_cell: a cell written by clipcls starts with `'` only if one was added."""
    return cell[1:] if cell.startswith("'") else cell


class SafeCsv:
    """csv.writer with `\\n` line ends that also quotes any row holding a `\\r`: csv quotes only
    what is in its line terminator, and an unquoted `\\r` ends a row for every CSV reader."""

    def __init__(
        self, stream: TextIO, header: Sequence[str], numbers: Sequence[bool] | None = None
    ) -> None:
        # numbers: which columns hold numbers clipcls wrote (by default, by their names)
        self.numbers = list(numbers or [is_number_column(name) for name in header])
        self.minimal = csv.writer(stream, lineterminator="\n")  # not \r\n: awk and grep
        self.quoted = csv.writer(stream, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def header(self, names: Sequence[str]) -> None:
        """Write the column names as they are (quoted where one holds a `\\r`: a multi-label
        output's prob:LABEL names come from the labels)."""
        writer = self.quoted if any("\r" in name for name in names) else self.minimal
        writer.writerow(names)

    def row(self, values: Sequence[str]) -> None:
        """Write one row of text, escaping every cell that is not a number column's."""
        cells = [v if n else to_cell(v) for v, n in zip(values, self.numbers, strict=True)]
        writer = self.quoted if any("\r" in cell for cell in cells) else self.minimal
        writer.writerow(cells)
