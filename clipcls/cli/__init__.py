"""The command line: the only package that imports typer. Each command parses its options,
calls the library, and prints; `app.py` puts them together."""

from clipcls.cli.app import app, main

__all__ = ["app", "main"]
