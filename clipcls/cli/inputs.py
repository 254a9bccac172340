"""What the classifying commands share: labels, templates and input paths from the options, the
embedding cache, and the CLI's voice for a backend (stderr lines and a spinner)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from clipcls.backends.base import Hooks
from clipcls.cache import EmbeddingCache
from clipcls.cli.console import counted, notice, status, stderr, warn
from clipcls.errors import UsageError
from clipcls.images import STDIN, check_inputs, read_path_list
from clipcls.labels import Label, parse_labels, read_labels_file
from clipcls.prompts import DEFAULT_TEMPLATES, TemplateSet, load_templates, single_templates
from clipcls.settings import ModelSettings

if TYPE_CHECKING:
    pass


def read_labels(labels: str | None, labels_file: Path | None) -> tuple[Label, ...]:
    """Labels from --labels or --labels-file (exactly one of them)."""
    if (labels is None) == (labels_file is None):
        raise UsageError("give exactly one of --labels or --labels-file")
    found = parse_labels(labels) if labels is not None else read_labels_file(labels_file or "")
    if len(found) == 1:
        warn(f"only one label ({found[0].name}): its probability is always 1.0; add alternatives")
    return found


def read_templates(templates: str, template: list[str] | None) -> TemplateSet:
    """A template set from --template (repeatable) or --templates NAME|FILE."""
    if template:
        if templates != DEFAULT_TEMPLATES:
            raise UsageError("give either --templates or --template, not both")
        return single_templates(template)
    return load_templates(templates)


def read_inputs(paths: list[str]) -> list[str]:
    """The input paths, with `-` replaced by the paths listed on stdin; all must exist."""
    inputs: list[str] = []
    for item in paths:
        inputs.extend(read_path_list(sys.stdin) if item == STDIN else [item])
    check_inputs(inputs)
    return inputs


def open_cache(settings: ModelSettings, no_cache: bool) -> EmbeddingCache | None:
    """The embedding cache beside the weights, unless --no-cache."""
    return None if no_cache else EmbeddingCache(settings.resolved_cache_dir(), on_failure=warn)


def hooks() -> Hooks:
    """The CLI's voice for a backend: notices and warnings on stderr, a spinner for slow steps,
    a progress bar for long counted ones; tips only where a person reads stderr."""
    if not stderr.is_terminal:
        return Hooks(notice=notice, warn=warn, status=status, progress=counted)
    return Hooks(notice=notice, warn=warn, status=status, progress=counted, tip=notice)


SERVER_CHECKED = ("device", "precision", "exact_decode", "pretrained")  # the server's to decide


def given_options(ctx: typer.Context) -> dict[str, Any]:
    """The model options given on the command line that a server must match (not defaults)."""
    return {
        name: ctx.params[name]
        for name in SERVER_CHECKED
        if name in ctx.params
        and getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"
    }
