"""The command group every clipcls group uses: an unknown command gets a "did you mean",
by spelling (Typer's own) or by meaning (`cache stats` -> `info`)."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

# Words people type for a command that has another name here.
SYNONYMS = {
    "stats": "info",
    "status": "info",
    "show": "info",
    "size": "info",
    "du": "info",
    "clean": "clear",
    "purge": "clear",
    "delete": "clear",
    "rm": "clear",
    "reset": "clear",
    "classify": "predict",
    "run": "predict",
    "eval": "evaluate",
    "server": "serve",
    "list": "models",
    "ls": "models",
    "save": "export",
    "download": "export",
}


class SuggestingGroup(TyperGroup):
    """A Typer group whose unknown commands get a suggestion by meaning when spelling finds none."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except typer.TyperException as error:
            message = getattr(error, "message", "")
            meant = SYNONYMS.get(args[0].casefold()) if args else None
            if "Did you mean" not in message and meant in self.commands:
                error.message = f"{message.rstrip('.')}. Did you mean {meant!r}?"
            raise
