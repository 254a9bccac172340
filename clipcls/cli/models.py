"""`clipcls models`: list the models open_clip knows, and export one for offline use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from clipcls.cli.console import notice, reported_errors, stderr, warn
from clipcls.cli.groups import SuggestingGroup
from clipcls.cli.options import CacheDirOpt, DebugOpt, JsonOpt, OfflineOpt, PretrainedOpt
from clipcls.errors import UsageError
from clipcls.output.writers import plain_console
from clipcls.settings import DEFAULT_MODEL, Device, ModelSettings, Precision

LIST_EXAMPLES = """
[bold]Examples[/bold]

  clipcls models
  clipcls models --filter ViT-B-32
  clipcls models --cached
  clipcls models --json --filter ViT-B-32
  clipcls models export ViT-B-32 --pretrained datacomp_xl_s13b_b90k ./vit-b-32
"""
EXPORT_EXAMPLES = """
[bold]Examples[/bold]

  clipcls models export ViT-B-32 --pretrained datacomp_xl_s13b_b90k ./vit-b-32
  clipcls predict photos/ --labels cat,dog --model local-dir:./vit-b-32 --offline
"""

if TYPE_CHECKING:
    from clipcls.engine.catalog import CatalogEntry

models_app = typer.Typer(cls=SuggestingGroup, rich_markup_mode="rich", no_args_is_help=False)


def _as_dict(entry: CatalogEntry) -> dict[str, object]:
    return {
        "model": entry.model,
        "pretrained": entry.pretrained,
        "default": entry.is_default,
        "cached": entry.cached,
    }


@models_app.callback(invoke_without_command=True, epilog=LIST_EXAMPLES)
def models(
    ctx: typer.Context,
    text_filter: Annotated[
        str, typer.Option("--filter", help="Only rows whose model or tag contains TEXT.")
    ] = "",
    cached: Annotated[bool, typer.Option("--cached", help="Only weights already cached.")] = False,
    cache_dir: CacheDirOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List open_clip architectures and pretrained tags: the default, and what is cached."""
    if ctx.invoked_subcommand is not None:
        return
    from clipcls.engine.catalog import catalog

    with reported_errors(debug):
        settings = ModelSettings(DEFAULT_MODEL, None, Device.CPU, Precision.FP32, cache_dir, True)
        entries = [e for e in catalog(settings, text_filter) if e.cached or not cached]
        if as_json and (entries or not text_filter):
            typer.echo(json.dumps([_as_dict(entry) for entry in entries], indent=2))
            return
        if not entries and cached and not text_filter:
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
            tag = entry.pretrained + (" (default)" if entry.is_default else "")
            table.add_row(
                Text(entry.model, style=style),
                Text(tag, style=style),
                "yes" if entry.cached else "",
            )
        plain_console().print(table)
        notice(f"{len(entries)} rows; weights cache: {settings.resolved_cache_dir()}")


@models_app.command("export", epilog=EXPORT_EXAMPLES)
def export(
    model: Annotated[str, typer.Argument(help="Architecture, hf-hub:ORG/REPO or local-dir:PATH.")],
    folder: Annotated[
        Path, typer.Argument(help="New folder to write (must not exist or be empty).")
    ],
    pretrained: PretrainedOpt = None,
    cache_dir: CacheDirOpt = None,
    offline: OfflineOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write a self-contained local-dir: folder that loads with no network."""
    from clipcls.engine.model import ClipModel

    with reported_errors(debug):
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise UsageError(f"{folder} exists and is not an empty folder")
        settings = ModelSettings(model, pretrained, Device.CPU, Precision.FP32, cache_dir, offline)
        with stderr.status("loading model"):
            loaded = ClipModel(settings)
        for line in loaded.info.notices:
            warn(line)
        with stderr.status(f"writing {folder}"):
            loaded.export(folder)
        notice(f"wrote {folder}: use it with --model local-dir:{folder}")
