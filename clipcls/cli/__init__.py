"""The command line: the only package that imports typer. Each command parses its options,
calls the library, and prints; `commands.py` puts them together, loaded on first use: a search a
warm server answers (`quick.py`) prints before Typer would have finished importing."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the `clipcls` script (and `python -m clipcls`)."""
    from clipcls.cli.interrupts import exiting, stop_politely
    from clipcls.errors import ExitStatus

    stop_politely()
    try:
        from clipcls.cli.messages import forgiving_streams
        from clipcls.cli.quick import quick_search

        forgiving_streams()
        status = quick_search(sys.argv[1:])
        if status is not None:
            sys.exit(status)
        from clipcls.cli.commands import main as run_app

        run_app()
    except KeyboardInterrupt:  # Ctrl-C while the commands load, before any is running
        sys.stderr.write("interrupted\n")
        sys.exit(int(ExitStatus.INTERRUPTED))
    finally:
        exiting()  # a stop signal from here (torch's exit handlers) ends it quietly


def __getattr__(name: str) -> Any:
    if name == "app":  # the Typer app, for tests and embedding (CliRunner)
        from clipcls.cli.commands import app

        return app
    raise AttributeError(f"module 'clipcls.cli' has no attribute {name!r}")
