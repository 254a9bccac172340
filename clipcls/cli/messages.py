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


# Error handlers that never raise: one the user chose (PYTHONIOENCODING=ascii:replace) stays.
LENIENT = ("backslashreplace", "replace", "xmlcharrefreplace", "namereplace", "ignore")


def forgiving_stdout() -> None:
    """Write what stdout cannot encode (`café` to an ASCII terminal, a name's undecodable byte)
    escaped as error lines show it (\\xe9, \\u732b, \\xff) instead of ending a finished run
    in a UnicodeEncodeError; files given with -o are opened as UTF-8 and stay exact."""
    stream = sys.stdout
    errors = getattr(stream, "errors", None)
    if errors not in (*LENIENT, ESCAPE_ERRORS) and isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(errors=ESCAPE_ERRORS)
