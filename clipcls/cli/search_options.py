"""The options and examples `clipcls search` and `clipcls similar` share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clipcls.cli.flags import TOP_K

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
