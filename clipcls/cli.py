"""The `clipcls` command line: the Typer app and its commands."""

from __future__ import annotations

from typing import Annotated

import typer

from clipcls import __version__
from clipcls.commands.models import models_app
from clipcls.commands.predict import predict
from clipcls.commands.templates import templates

app = typer.Typer(
    name="clipcls",
    help="Zero-shot image classification with CLIP: your images, your labels, no training.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command()(predict)
app.command()(templates)
app.add_typer(models_app, name="models")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"clipcls {__version__}")
        raise typer.Exit()


@app.callback()
def clipcls(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Zero-shot image classification with CLIP: your images, your labels, no training."""


def main() -> None:
    """Entry point of the `clipcls` script."""
    app()
