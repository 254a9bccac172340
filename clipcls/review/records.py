"""Read an output's rows as stored (CSV, JSONL, Parquet) without changing a byte, and refuse a
file clipcls did not write: one line naming it."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipcls.errors import UsageError
from clipcls.output.formats import LABEL_FORMATS, Format, format_of
from clipcls.output.reading import Unreadable
from clipcls.output.rows import Columns
from clipcls.pathtext import clean_text

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


def _header(output: Path, kind: Format, found: tuple[str, ...] | None) -> tuple[str, ...]:
    """A flat output's columns, refused unless clipcls writes exactly those; () for JSONL."""
    if not kind.flat:
        return ()
    if found is not None:
        refuse_multi_label(output, found)
    if found is None or columns_of(list(found)) is None:
        # a text file's header is its first line; a Parquet file's, its schema
        header = "its first line is not a clipcls CSV header"
        raise foreign(output, "not the columns clipcls writes" if kind.binary else header)
    return found


def _single_label(output: Path, rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for record in rows:
        refuse_multi_label(output, record)  # JSONL's; a flat output's header said it already
        yield record


def _check_regular(output: Path) -> None:
    """UsageError unless output is a regular file (links followed): a FIFO or a device would
    block or never end."""
    try:
        mode = output.stat().st_mode
    except FileNotFoundError:
        raise UsageError(f"no such output file: {clean_text(str(output))}") from None
    except OSError as error:
        raise UsageError(f"cannot read {clean_text(str(output))}: {error.strerror}") from None
    if not stat.S_ISREG(mode):
        what = "a folder, not an output file" if stat.S_ISDIR(mode) else "not a regular file"
        raise UsageError(f"{clean_text(str(output))} is {what}")


def read_records(output: Path, embeddings: bool = False) -> Records:
    """The output's rows as stored (JSONL ones with their embeddings only if asked: reading them
    is most of the time); UsageError for a missing file or one clipcls did not write."""
    kind = format_of(output)
    if kind is None or kind not in LABEL_FORMATS:
        raise UsageError(
            f"review reads .csv, .jsonl or .parquet outputs, not {clean_text(str(output))}"
        )
    _check_regular(output)
    try:
        # flat rows are as CSV holds them: never an embedding
        stored = kind.read(output, embeddings=embeddings and not kind.flat)
        header = _header(output, kind, stored.header)
        records = tuple(_single_label(output, stored.rows))
    except Unreadable as error:
        raise foreign(output, error.why) from None
    except OSError as error:
        raise UsageError(
            f"cannot read {clean_text(str(output))}: {error.strerror or error}"
        ) from None
    return Records(kind, header, records, stored.dropped_bytes)
