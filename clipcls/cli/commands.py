"""The `clipcls` command line: the Typer app and its commands."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperOption

from clipcls.cli import dedupe as dedupe_command
from clipcls.cli import doctor as doctor_command
from clipcls.cli import evaluate as evaluate_command
from clipcls.cli import label as label_command
from clipcls.cli import predict as predict_command
from clipcls.cli import review as review_command
from clipcls.cli import search as search_command
from clipcls.cli import serve as serve_command
from clipcls.cli import templates as templates_command
from clipcls.cli.cache import EXAMPLES as CACHE_EXAMPLES
from clipcls.cli.cache import cache_app
from clipcls.cli.clock import start_run
from clipcls.cli.config import config_app
from clipcls.cli.console import stderr
from clipcls.cli.groups import SuggestingGroup
from clipcls.cli.messages import forgiving_streams
from clipcls.cli.models import models_app
from clipcls.cli.search_options import SEARCH_EXAMPLES, SIMILAR_EXAMPLES
from clipcls.errors import ExitStatus
from clipcls.version import __version__

_value_type = TyperOption.display_type_rich


def _flag_shows_no_type(self: TyperOption, ctx: typer.Context) -> str | None:
    # Typer 0.29 prints `<bool>` after plain flags (--quiet, --help), as if they took a value.
    # Choices get spaces around `|`, so that a narrow terminal wraps `<table | csv | json |
    # jsonl | parquet>` between choices, not inside `parquet`.
    shown = None if self.is_flag else _value_type(self, ctx)
    return shown.replace("|", " | ") if shown else shown


TyperOption.display_type_rich = _flag_shows_no_type  # type: ignore[method-assign,assignment]


class OneLineErrors(SuggestingGroup):
    """Report bad options as one line on stderr, exit 2, like every other clipcls error."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        run = super().main
        start_run()
        forgiving_streams()  # also where the app runs without main(): CliRunner, embedding
        if not standalone_mode:
            return run(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            status = run(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as error:  # Click's usage errors, vendored by Typer
            ctx = getattr(error, "ctx", None)
            where = ctx.command_path if ctx is not None else self._path_in(args, prog_name)
            said = error.format_message().rstrip(".")  # `Missing argument 'X'.` ends in (see
            stderr.print("error: ", style="red", end="")
            stderr.print(f"{said} (see `{where} --help`)", markup=False, soft_wrap=True)
            sys.exit(error.exit_code)
        except typer.Abort:
            sys.exit(int(ExitStatus.INTERRUPTED))
        sys.exit(status if isinstance(status, int) else int(ExitStatus.OK))

    def _path_in(self, args: Sequence[str] | None, prog_name: str | None) -> str:
        """The command an argv names (`clipcls models export`), for an error Click raised
        before it made the command's context (`--labels` with no value after it)."""
        words, group = [prog_name or "clipcls"], self
        for word in sys.argv[1:] if args is None else args:
            command = getattr(group, "commands", {}).get(word)  # only a group has commands
            if command is None:
                break
            words.append(word)
            group = command
        return " ".join(words)


app = typer.Typer(
    name="clipcls",
    cls=OneLineErrors,
    help="Zero-shot image classification with CLIP: your images, your labels, no training.",
    rich_markup_mode="rich",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Each command's examples close its --help (epilog), kept beside the command in its module.
app.command(epilog=predict_command.EXAMPLES)(predict_command.predict)
app.command(epilog=label_command.EXAMPLES)(label_command.label)
app.command(epilog=evaluate_command.EXAMPLES)(evaluate_command.evaluate)
app.command(epilog=SEARCH_EXAMPLES)(search_command.search)
app.command(epilog=SIMILAR_EXAMPLES)(search_command.similar)
app.command(epilog=dedupe_command.EXAMPLES)(dedupe_command.dedupe)
app.command(epilog=templates_command.EXAMPLES)(templates_command.templates)
app.command(epilog=serve_command.EXAMPLES)(serve_command.serve)
app.command(epilog=review_command.EXAMPLES)(review_command.review)
app.command(epilog=doctor_command.EXAMPLES)(doctor_command.doctor)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
app.add_typer(
    cache_app, name="cache", help="Inspect or clear the embedding cache.", epilog=CACHE_EXAMPLES
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"clipcls {__version__}")
        raise typer.Exit()


@app.callback()
def clipcls(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Zero-shot image classification with CLIP: your images, your labels, no training."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


def main() -> None:
    """Entry point of the `clipcls` script."""
    app(prog_name="clipcls")  # `python -m clipcls` too: the name people type
