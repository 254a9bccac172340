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
  clipcls models export ViT-B-32 ./tiny-random --random --tiny   # no network, meaningless
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
        "sigmoid": entry.sigmoid,
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
    """List open_clip architectures and pretrained tags: the default, what is cached, and the
    sigmoid (SigLIP-family) models, whose labels each get an independent probability."""
    if ctx.invoked_subcommand is not None:
        return
    from clipcls.engine.catalog import catalog, matches

    with reported_errors(debug):
        settings = ModelSettings(DEFAULT_MODEL, None, Device.CPU, Precision.FP32, cache_dir, True)
        known = catalog(settings)  # listed once: the filter and the empty-cache rule both read it
        entries = [
            e
            for e in known
            if matches(e.model, e.pretrained, text_filter) and (e.cached or not cached)
        ]
        # An empty cache is no error, whatever the filter (docs/models.md promises exit 0).
        empty = cached and not any(e.cached for e in known)
        if as_json and (entries or not text_filter or empty):
            typer.echo(json.dumps([_as_dict(entry) for entry in entries], indent=2))
            return
        if empty:
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
    random: Annotated[
        bool,
        typer.Option(
            "--random",
            help="Random weights, no download: to try clipcls out; predictions are meaningless.",
        ),
    ] = False,
    tiny: Annotated[
        bool, typer.Option("--tiny", help="With --random: a few-MB model of the same family.")
    ] = False,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="With --random: the seed of the weights.")
    ] = 0,
    cache_dir: CacheDirOpt = None,
    offline: OfflineOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write a self-contained local-dir: folder that loads with no network."""
    with reported_errors(debug):
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise UsageError(f"{folder} exists and is not an empty folder")
        if random:
            _export_random(model, folder, pretrained, tiny, seed)
            return
        if tiny:
            raise UsageError("--tiny only goes with --random")
        _export_loaded(model, folder, pretrained, cache_dir, offline)


def _export_random(model: str, folder: Path, pretrained: str | None, tiny: bool, seed: int) -> None:
    """Write random weights of an architecture: nothing is downloaded."""
    from clipcls.engine.random_model import tiny_note, write_random_model
    from clipcls.engine.sources import RANDOM_NOTICE

    if pretrained is not None or ":" in model:
        raise UsageError("--random makes its own weights: give an architecture, no weights")
    size = "tiny " if tiny else ""
    with stderr.status(f"writing {folder}"):
        write_random_model(folder, model, seed=seed, tiny=tiny)
    warn(RANDOM_NOTICE.format(name=f"local-dir:{folder}"))
    note = tiny_note(model) if tiny else None
    if note:
        notice(note)
    notice(f"wrote {folder} ({size}{model}, seed {seed}): use it with --model local-dir:{folder}")


def _export_loaded(
    model: str, folder: Path, pretrained: str | None, cache_dir: Path | None, offline: bool
) -> None:
    """Load a model (cache first, then download) and write it whole."""
    from clipcls.engine.factory import open_model

    settings = ModelSettings(model, pretrained, Device.CPU, Precision.FP32, cache_dir, offline)
    with stderr.status("loading model"):
        loaded = open_model(settings)
    for line in loaded.info.notices:
        warn(line)
    with stderr.status(f"writing {folder}"):
        loaded.export(folder)
    notice(f"wrote {folder}: use it with --model local-dir:{folder}")
