"""Output files: the format from --format or the name, and checks before anything is written."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

from clipcls.errors import UsageError


class Format(str, Enum):
    """Output formats, for every command."""

    TABLE = "table"
    CSV = "csv"
    JSON = "json"
    JSONL = "jsonl"
    PARQUET = "parquet"


# A label run writes files (no table); CSV and JSONL grow a row at a time and can be resumed.
FILE_FORMATS = (Format.CSV, Format.JSONL, Format.PARQUET)
RESUMABLE = (Format.CSV, Format.JSONL)


SUFFIXES = {
    ".csv": Format.CSV,
    ".json": Format.JSON,
    ".jsonl": Format.JSONL,
    ".ndjson": Format.JSONL,
    ".txt": Format.TABLE,
    ".parquet": Format.PARQUET,
}


def format_for(
    output: Path | None,
    explicit: Format | None,
    allowed: tuple[Format, ...] = tuple(Format),
) -> Format:
    """The format: --format, else the output's extension, else a table on stdout.

    A --format that contradicts the extension, or a format the command cannot write, is a
    usage error; so is an output whose extension says nothing without --format.
    """
    named = SUFFIXES.get(output.suffix.lower()) if output is not None else None
    choices = "|".join(f.value for f in allowed)
    if explicit is not None and named is not None and explicit is not named:
        raise UsageError(
            f"--format {explicit.value} contradicts the extension of {output} "
            f"({named.value}): drop --format or rename the file"
        )
    found = explicit or named
    if found is None and output is not None:
        raise UsageError(f"cannot tell the format of {output} from its name: --format {choices}")
    found = found or allowed[0]
    if found not in allowed:
        raise UsageError(f"this command writes {choices}, not {found.value}")
    return found


def check_writable(path: Path, option: str = "--output") -> None:
    """Fail before any model loads if the output file cannot be created or appended to."""
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise UsageError(f"{option} folder does not exist: {path.parent}")
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        raise UsageError(f"cannot write {path}: permission denied")


def check_new_output(path: Path, overwrite: bool, option: str = "--output") -> None:
    """Fail before any model loads if the output cannot be written, or if it would replace
    the contents of an existing file without --overwrite (the rule `label` keeps too)."""
    check_writable(path, option)
    if path.is_file() and path.stat().st_size > 0 and not overwrite:
        raise UsageError(f"{option} {path} already exists: add --overwrite to replace it")


def page_path(given: str) -> Path:
    """The HTML file a --report value names: `out/` or an existing folder means out/index.html.

    The folder itself may be new (it is made when the page is written); its parent must exist.
    """
    path = Path(given)
    if given.endswith(("/", os.sep)) or path.is_dir():
        return path / "index.html"
    return path


def check_page(page: Path, overwrite: bool) -> None:
    """check_new_output for a --report page, whose folder may still have to be made."""
    if page.parent.exists():
        check_new_output(page, overwrite, "--report")
    else:
        check_writable(page.parent, "--report")


def check_target(path: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to replace an existing output unless told to resume or overwrite it."""
    if resume and overwrite:
        raise UsageError("give --resume or --overwrite, not both")
    check_writable(path)
    if path.exists() and not path.is_file():
        raise UsageError(f"--output {path} is not a regular file")
    if path.exists() and path.stat().st_size > 0 and not (resume or overwrite):
        raise UsageError(
            f"{path} already exists: add --resume to continue it or --overwrite to replace it"
        )
