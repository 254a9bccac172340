"""The spellings of the options a served search takes, declared once for the two grammars that
read them: Click's (through Typer: search.py, options.py) and the fast path's (quick.py), which
answers before Typer is imported and so cannot ask Click; standard library alone."""

from __future__ import annotations

from enum import Enum

from clipcls.output.files import Format

TOP_K = ("--top-k", "-k")
FORMAT = ("--format", "-f")
QUIET = ("--quiet", "-q")
SERVER = ("--server",)
SERVER_ENV = "CLIPCLS_SERVER"  # --server's environment variable


class SearchFormat(str, Enum):
    """What search, similar and dedupe write: a table for people, or rows for programs."""

    TABLE = Format.TABLE.value
    CSV = Format.CSV.value
    JSON = Format.JSON.value
    JSONL = Format.JSONL.value
