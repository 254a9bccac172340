"""`clipcls models`: list the models open_clip knows, and export one for offline use."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from clipcls.cli.console import notice, reported_errors
from clipcls.cli.groups import SuggestingGroup
from clipcls.cli.models_export import EXPORT_EXAMPLES, export
from clipcls.cli.models_onnx import PREPARE_EXAMPLES, prepare
from clipcls.cli.options import CacheDirOpt, DebugOpt, JsonOpt
from clipcls.errors import UsageError
from clipcls.output.writers import plain_console
from clipcls.settings import Device, ModelSettings, Precision
from clipcls.userconfig import user_defaults

LIST_EXAMPLES = """
[bold]Examples[/bold]

  clipcls models
  clipcls models --filter ViT-B-32
  clipcls models --cached
  clipcls models --json --filter ViT-B-32
  clipcls models export ViT-B-32 --pretrained datacomp_xl_s13b_b90k ./vit-b-32
"""

if TYPE_CHECKING:
    from clipcls.engine.catalog import CatalogEntry

models_app = typer.Typer(cls=SuggestingGroup, rich_markup_mode="rich", no_args_is_help=False)


def _as_dict(entry: CatalogEntry) -> dict[str, object]:
    return {
        "model": entry.model,
        "pretrained": entry.pretrained or None,  # None: a local-dir: folder
        "default": entry.is_default,
        "cached": entry.cached,
        "sigmoid": entry.sigmoid,
    }


@models_app.callback(invoke_without_command=True, epilog=LIST_EXAMPLES)
def models(
    ctx: typer.Context,
    text_filter: Annotated[
        str, typer.Option("--filter", help="Only rows whose model or tag contains TEXT.")
    ] = "",
    cached: Annotated[
        bool,
        typer.Option(
            "--cached", help="Only weights already cached, and the local-dir: folders used here."
        ),
    ] = False,
    cache_dir: CacheDirOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List open_clip architectures and pretrained tags: the default, what is cached, and the
    sigmoid (SigLIP-family) models, whose labels each get an independent probability."""
    if ctx.invoked_subcommand is not None:
        return
    from clipcls.engine.catalog import catalog, local_dir_entries, matches

    with reported_errors(debug):
        default = user_defaults().model  # the default to mark: the user's
        arch, _, tag = default.partition(":")
        settings = ModelSettings(arch, tag or None, Device.CPU, Precision.FP32, cache_dir, True)
        known = catalog(settings)  # listed once: the filter and the empty-cache rule both read it
        # An empty weights cache is no error, whatever the filter (docs/models.md: exit 0).
        empty = cached and not any(e.cached for e in known)
        if cached:  # folders gone since are listed too, marked, and counted as not cached
            known += local_dir_entries(settings, default)
        entries = [
            e
            for e in known
            if matches(e.model, e.pretrained, text_filter) and (e.cached or e.gone or not cached)
        ]
        if as_json and (entries or not text_filter or empty):
            typer.echo(json.dumps([_as_dict(entry) for entry in entries], indent=2))
            return
        if empty and not entries:
            notice(f"no models cached yet in {settings.resolved_cache_dir()}")
            return
        if not entries:
            raise UsageError(
                f"no model matches {text_filter!r}" + (" in the cache" if cached else "")
            )
        table = Table(header_style="bold")
        table.add_column("model", no_wrap=True)
        table.add_column("pretrained", no_wrap=True)
        table.add_column("cached")
        for entry in entries:
            style = "bold green" if entry.is_default else ""
            # A mark in the tag column, which has room: SigLIP tags are short (webli).
            marks = [("default", entry.is_default), ("sigmoid", entry.sigmoid)]
            tag = " ".join([entry.pretrained, *(f"({mark})" for mark, on in marks if on)])
            table.add_row(
                Text(entry.model, style=style),
                Text(tag, style=style),
                "yes" if entry.cached else "gone" if entry.gone else "",
            )
        plain_console().print(table)
        notice(f"{len(entries)} rows; weights cache: {settings.resolved_cache_dir()}")


models_app.command("export", epilog=EXPORT_EXAMPLES)(export)
models_app.command("prepare", epilog=PREPARE_EXAMPLES)(prepare)
