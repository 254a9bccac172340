"""The options and examples `clipcls search` and `clipcls similar` share (and dedupe's words
for the scale options it shares with them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clipcls.cli.flags import TOP_K
from clipcls.cli.option_groups import SCALE

_SCALE = ("server", "batch_size", "no_cache", "from_embeddings")  # no Ray: nothing to spread
_SERVED = "with no model loaded here (API key from $CLIPCLS_API_KEY)."


def _saved(what: str, then: str) -> str:
    return f"{what} the embeddings a `label --save-embeddings` run saved; {then}."


SEARCH_SCALE = SCALE.options(
    only=_SCALE,
    helps={
        "server": "A `clipcls serve` URL to search with (it embeds the query and the images "
        f"the cache lacks, or searches the folders it may read itself), {_SERVED}",
        "from_embeddings": _saved("Search", "only a query image it lacks is read"),
    },
)
SIMILAR_SCALE = SCALE.options(
    only=_SCALE,
    helps={
        "server": f"A `clipcls serve` URL that embeds the images the cache lacks, {_SERVED}",
        "from_embeddings": _saved("Search", "the image is read only if it lacks it"),
    },
)
DEDUPE_SCALE = SCALE.options(
    only=_SCALE,
    helps={
        "server": f"A `clipcls serve` URL that embeds the images the cache lacks, {_SERVED}",
        "from_embeddings": _saved("Group", "no image is read"),
    },
)

SEARCH_EXAMPLES = """
[bold]Examples[/bold]

  clipcls search photos/ "a red car"
  clipcls search photos/ "a red car + sunset - blurry" -k 50 -f jsonl
  clipcls search photos/ "at the beach" --image like-this.jpg --templates photo
  clipcls search photos/ --image like-this.jpg -o hits.csv
  clipcls search photos/ "a dog" --server http://127.0.0.1:8765
  clipcls search --from-embeddings run.jsonl "a dog"
"""

SIMILAR_EXAMPLES = """
[bold]Examples[/bold]

  clipcls similar photos/cat.jpg photos/ -k 10
  clipcls similar query.png archive/ more/ -f csv -o similar.csv
"""

TopKOpt = Annotated[int, typer.Option(*TOP_K, min=1, help="Images shown.")]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write to FILE, not stdout.")
]
ImagesOpt = Annotated[
    list[Path] | None,
    typer.Option("--image", "-i", help="A query image; repeat for several (all averaged)."),
]
TemplatesOpt = Annotated[
    str | None,
    typer.Option(
        "--templates",
        "-t",
        help="Put each query term through this template set (name or FILE).",
        show_default="the text alone",
    ),
]
