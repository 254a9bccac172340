"""Each command's --format: only the formats that command writes, shown in its --help and
refused by the option itself otherwise; mapped once (as_format) to output.formats' objects."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from clipcls.output.formats import FORMATS, Format


class PredictFormat(str, Enum):
    """What `predict` writes: every format."""

    TABLE = Format.TABLE.name
    CSV = Format.CSV.name
    JSON = Format.JSON.name
    JSONL = Format.JSONL.name
    PARQUET = Format.PARQUET.name


class FileFormat(str, Enum):
    """What `label` writes: files that grow a row at a time."""

    CSV = Format.CSV.name
    JSONL = Format.JSONL.name
    PARQUET = Format.PARQUET.name


class ReportFormat(str, Enum):
    """What `evaluate` writes: a table for people or one JSON document."""

    TABLE = Format.TABLE.name
    JSON = Format.JSON.name


class SearchFormat(str, Enum):
    """What search, similar and dedupe write: a table for people, or rows for programs."""

    TABLE = Format.TABLE.name
    CSV = Format.CSV.name
    JSON = Format.JSON.name
    JSONL = Format.JSONL.name


def as_format(chosen: Enum | None) -> Format | None:
    """A command's own --format choice as the Format object that writes it."""
    return None if chosen is None else FORMATS[chosen.value]


FROM_EXTENSION = "from the --output extension, else table"
PredictFormatOpt = Annotated[
    PredictFormat | None,
    typer.Option("--format", "-f", help="Output format.", show_default=FROM_EXTENSION),
]
LabelFormatOpt = Annotated[
    FileFormat | None,
    typer.Option("--format", "-f", help="File format.", show_default="from the extension"),
]
ReportFormatOpt = Annotated[
    ReportFormat | None,
    typer.Option("--format", "-f", help="Report format.", show_default=FROM_EXTENSION),
]
SearchFormatOpt = Annotated[
    SearchFormat | None,
    typer.Option("--format", "-f", help="Output format.", show_default="from -o, else table"),
]
