"""`clipcls templates`: list the built-in prompt template sets, or show one."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from clipcls.cli.console import reported_errors
from clipcls.cli.options import DebugOpt, JsonOpt
from clipcls.output.writers import plain_console
from clipcls.prompts import DEFAULT_TEMPLATES, TemplateSet, list_template_sets, load_templates

EXAMPLES = """
[bold]Examples[/bold]

  clipcls templates
  clipcls templates satellite
  clipcls templates --json
  clipcls predict tiles/ --labels "forest,river,highway" --templates satellite
"""


def _as_dict(found: TemplateSet) -> dict[str, object]:
    return {
        "name": found.name,
        "description": found.description,
        "default": found.name == DEFAULT_TEMPLATES,
        "templates": list(found.templates),
    }


def templates(
    name: Annotated[
        str | None, typer.Argument(help="Show the templates of this set (a name or FILE).")
    ] = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List the prompt template sets, or print the templates of one."""
    console = plain_console()
    with reported_errors(debug):
        if as_json:
            sets = [load_templates(name)] if name is not None else list_template_sets()
            documents = [_as_dict(one) for one in sets]
            typer.echo(json.dumps(documents[0] if name is not None else documents, indent=2))
            return
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
