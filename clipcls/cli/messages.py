"""The lines people read on stderr: warnings and notices, file names shown literally. Rich and
the standard library only, so that a command's fast path prints them as the full CLI does."""

from __future__ import annotations

import io
import sys

from rich.text import Text

from clipcls.output.rows import printable
from clipcls.output.writers import plain_console
from clipcls.pathtext import ESCAPE_ERRORS

stderr = plain_console(stderr=True)


def warn(message: str) -> None:
    """One yellow line on stderr (control characters in file names shown as \\xNN)."""
    stderr.print(Text.assemble(("warning:", "yellow"), " ", printable(message)), soft_wrap=True)


def error_line(message: str) -> None:
    """`error:` in red, then the message on one line (shown literally)."""
    stderr.print("error: ", style="red", end="")
    stderr.print(printable(message), soft_wrap=True, markup=False)


def notice(message: str) -> None:
    """One dim line on stderr."""
    stderr.print(printable(message), style="dim", soft_wrap=True, markup=False)


# Lossy handlers a user chose (PYTHONIOENCODING=ascii:replace) stay; any other gives way.
CHOSEN = ("replace", "xmlcharrefreplace", "namereplace", "ignore")


def forgiving_streams() -> None:
    """Write what stdout or stderr cannot encode (`café` to an ASCII terminal) as JSON escapes
    it (\\u00e9), an undecodable file-name byte as \\xff (so the two never read alike, as
    with Python's own backslashreplace), instead of ending a finished run in a
    UnicodeEncodeError; JSON stays valid, and files given with -o are UTF-8 and exact."""
    for stream in (sys.stdout, sys.stderr):
        errors = getattr(stream, "errors", None)
        if errors not in (*CHOSEN, ESCAPE_ERRORS) and isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors=ESCAPE_ERRORS)
