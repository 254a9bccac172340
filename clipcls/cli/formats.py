"""Each command's --format: only the formats that command writes, shown in its --help and
refused by the option itself otherwise."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from clipcls.output.files import Format


class FileFormat(str, Enum):
    """What `label` writes: files that grow a row at a time."""

    CSV = Format.CSV.value
    JSONL = Format.JSONL.value
    PARQUET = Format.PARQUET.value


class ReportFormat(str, Enum):
    """What `evaluate` writes: a table for people or one JSON document."""

    TABLE = Format.TABLE.value
    JSON = Format.JSON.value


def as_format(chosen: Enum | None) -> Format | None:
    """A command's own --format choice as the Format the writers take."""
    return None if chosen is None else Format(chosen.value)


FROM_EXTENSION = "from the --output extension, else table"
PredictFormatOpt = Annotated[
    Format | None,
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
