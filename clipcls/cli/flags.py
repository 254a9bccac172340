"""The spellings of the options a served search takes, declared once for the two grammars that
read them: Click's (through Typer: search.py, formats.py, options.py) and the fast path's
(quick.py), which answers before Typer is imported and so cannot ask Click; standard library
alone. The formats they write are output.formats' RESULT_FORMATS, read by both alike."""

from __future__ import annotations

TOP_K = ("--top-k", "-k")
FORMAT = ("--format", "-f")
QUIET = ("--quiet", "-q")
SERVER = ("--server",)
SERVER_ENV = "CLIPCLS_SERVER"  # --server's environment variable
