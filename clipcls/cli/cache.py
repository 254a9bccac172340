"""`clipcls cache info|clear`: the embedding cache that makes re-runs nearly free."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from clipcls.cache import FILE_NAME, MAX_ENV, EmbeddingCache, clear_cache
from clipcls.cli.console import notice, reported_errors
from clipcls.cli.groups import SuggestingGroup
from clipcls.cli.options import CacheDirOpt, DebugOpt
from clipcls.output.writers import plain_console
from clipcls.settings import ModelSettings

EXAMPLES = """
[bold]Examples[/bold]

  clipcls cache info
  clipcls cache clear
  CLIPCLS_CACHE_MAX_GB=10 clipcls label photos/ --labels cat,dog -o labels.csv
"""

cache_app = typer.Typer(cls=SuggestingGroup, rich_markup_mode="rich", no_args_is_help=True)


def _open(cache_dir: Path | None) -> EmbeddingCache:
    return EmbeddingCache(ModelSettings(cache_dir=cache_dir).resolved_cache_dir())


def _size(count: int) -> str:
    return f"{count / 1024**2:,.1f} MB" if count < 1024**3 else f"{count / 1024**3:,.2f} GB"


@cache_app.command("info", epilog=EXAMPLES)
def info(cache_dir: CacheDirOpt = None, debug: DebugOpt = False) -> None:
    """Where the embedding cache is, how big, and what it holds."""
    with reported_errors(debug):
        cache = _open(cache_dir)
        found = cache.info()
        table = Table(show_header=False, box=None)
        table.add_column(style="bold")
        table.add_column()
        table.add_row("file", str(found.path))
        table.add_row("size", f"{_size(found.bytes)} of {_size(found.max_bytes)} (${MAX_ENV})")
        table.add_row("image embeddings", f"{found.images:,} from {found.models} model setups")
        table.add_row("text embeddings", f"{found.texts:,}")
        plain_console().print(table)


@cache_app.command("clear", epilog=EXAMPLES)
def clear(cache_dir: CacheDirOpt = None, debug: DebugOpt = False) -> None:
    """Delete every cached embedding (downloaded weights stay)."""
    with reported_errors(debug):
        folder = ModelSettings(cache_dir=cache_dir).resolved_cache_dir()
        if not (folder / FILE_NAME).exists() and not (folder / "search").exists():
            notice(f"no embedding cache in {folder}: nothing to remove")
            return
        freed = clear_cache(folder)
        notice(f"removed the embedding cache in {folder} ({_size(freed)})")
