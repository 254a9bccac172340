"""`clipcls templates`: list the built-in prompt template sets, or show one."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from clipcls.cli.console import reported_errors
from clipcls.cli.options import DebugOpt
from clipcls.output.writers import plain_console
from clipcls.prompts import DEFAULT_TEMPLATES, list_template_sets, load_templates

EXAMPLES = """
[bold]Examples[/bold]

  clipcls templates
  clipcls templates satellite
  clipcls predict tiles/ --labels "forest,river,highway" --templates satellite
"""


def templates(
    name: Annotated[
        str | None, typer.Argument(help="Show the templates of this set (a name or FILE).")
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """List the prompt template sets, or print the templates of one."""
    console = plain_console()
    with reported_errors(debug):
        if name is not None:
            for template in load_templates(name).templates:
                console.print(template, markup=False, soft_wrap=True)
            return
        table = Table(header_style="bold")
        table.add_column("name")
        table.add_column("templates", justify="right")
        table.add_column("for")
        table.add_column("example")
        for found in list_template_sets():
            marker = " (default)" if found.name == DEFAULT_TEMPLATES else ""
            table.add_row(
                Text(found.name + marker),
                str(len(found.templates)),
                Text(found.description),
                Text(found.templates[0]),
            )
        console.print(table)
