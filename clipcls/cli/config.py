"""`clipcls config`: the config file, each default setting and where it comes from; `set` and
`unset` change the file."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from clipcls.cli.console import notice, reported_errors, warn
from clipcls.cli.groups import SuggestingGroup
from clipcls.cli.options import DebugOpt, JsonOpt
from clipcls.userconfig import KEYS, change_setting, user_defaults

EXAMPLES = """
[bold]Examples[/bold]

  clipcls config
  clipcls config set model local-dir:./tiny-random
  clipcls config set precision fp32
  clipcls config unset model
  CLIPCLS_MODEL=ViT-B-16 clipcls predict photos/ -l cat,dog   (the environment wins over the file)
"""

config_app = typer.Typer(cls=SuggestingGroup, rich_markup_mode="rich", no_args_is_help=False)
KeyArg = Annotated[str, typer.Argument(help=f"One of: {', '.join(KEYS)}.", show_default=False)]


@config_app.callback(invoke_without_command=True, epilog=EXAMPLES)
def config(ctx: typer.Context, as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Show the config file and the default model and precision: the command line's -m and
    --precision win, then $CLIPCLS_MODEL and $CLIPCLS_PRECISION, then the file, then the
    built-in defaults. $CLIPCLS_CONFIG names another file."""
    if ctx.invoked_subcommand is not None:
        return
    with reported_errors(debug):
        found = user_defaults()
        if as_json:
            settings = {s.key: {"value": s.value, "source": s.source} for s in found.settings}
            document = {"path": str(found.path), "exists": found.exists, "settings": settings}
            typer.echo(json.dumps({**document, "path_source": found.path_source}, indent=2))
            return
        there = "" if found.exists else ", not there yet"
        notice(f"config file: {found.path} ({found.path_source}{there})")
        width = max(len(key) for key in KEYS)
        for setting in found.settings:  # one line each: a long local-dir: path stays whole
            typer.echo(f"{setting.key:<{width}}  {setting.value}  ({setting.source})")


def _said(key: str, path: str, what: str) -> None:
    notice(f"{what} in {path}")
    variable = KEYS[key].env
    if os.environ.get(variable):
        warn(f"${variable} is set, and wins over the file while it is")


@config_app.command("set", epilog=EXAMPLES)
def set_(
    key: KeyArg,
    value: Annotated[str, typer.Argument(help="The value.", show_default=False)],
    debug: DebugOpt = False,
) -> None:
    """Write a default into the config file (made if need be); other lines are kept."""
    with reported_errors(debug):
        path = change_setting(key, value)
        _said(key, str(path), f"{key} set")


@config_app.command("unset", epilog=EXAMPLES)
def unset(key: KeyArg, debug: DebugOpt = False) -> None:
    """Remove a default from the config file: the built-in one applies again."""
    with reported_errors(debug):
        path = change_setting(key, None)
        _said(key, str(path), f"{key} unset")
