"""What the classifying commands share: labels, templates and input paths from the options, and
loading the model with a word on stderr about what runs where."""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from clipcls.cache import EmbeddingCache
from clipcls.classify import Classifier
from clipcls.cli.console import notice, stderr, warn
from clipcls.engine.hardware import check_device_early
from clipcls.engine.model import ClipModel
from clipcls.engine.sources import check_model_name
from clipcls.errors import UsageError
from clipcls.images import DEFAULT_MAX_MEGAPIXELS, STDIN, check_inputs, read_path_list
from clipcls.labels import Label, parse_labels, read_labels_file
from clipcls.pipeline import ModelInfo
from clipcls.prompts import DEFAULT_TEMPLATES, TemplateSet, load_templates, single_templates
from clipcls.recorded import cached_classifier, remember_model
from clipcls.settings import ModelSettings, model_id

if TYPE_CHECKING:
    from clipcls.server.client import RemoteClassifier, ServerClient

NOT_LOADED = "(every embedding cached: the model was not loaded)"


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


def describe(info: ModelInfo) -> str:
    """The one stderr line that says which model runs where."""
    weights = f" ({info.pretrained})" if info.pretrained else ""
    return f"model {info.model}{weights} on {info.device}, {info.precision}"


def open_cache(settings: ModelSettings, no_cache: bool) -> EmbeddingCache | None:
    """The embedding cache beside the weights, unless --no-cache."""
    return None if no_cache else EmbeddingCache(settings.resolved_cache_dir(), on_failure=warn)


def load_model(settings: ModelSettings, quiet: bool) -> ClipModel:
    """Load the model, saying on stderr what runs where."""
    check_model_name(settings)
    check_device_early(settings.device, settings.precision)
    spinner = contextlib.nullcontext if quiet else stderr.status
    with spinner(f"loading {settings.model}"):
        encoder = ClipModel(settings)
    # torch, open_clip and the model leave ~10^6 long-lived objects; each full collection then
    # takes ~0.2 s. Frozen, collections scan only what the run allocates.
    gc.freeze()
    for line in encoder.info.notices:
        warn(line)
    if not quiet:
        notice(describe(encoder.info))
    return encoder


def load_classifier(
    settings: ModelSettings,
    labels: tuple[Label, ...],
    templates: TemplateSet,
    batch_size: int | None,
    quiet: bool,
    cache: EmbeddingCache | None = None,
    paths: Callable[[], Iterable[Path | str]] | None = None,
) -> tuple[Classifier, ModelInfo]:
    """Load the model and embed the prompts (each distinct prompt once, cached ones not).

    With paths (the files the run will classify): if the cache holds every prompt and every
    file under a model an earlier run recorded, answer from the cache without loading it.
    """
    if paths is not None:
        check_model_name(settings)
        classifier = cached_classifier(cache, settings, labels, templates, paths(), batch_size)
        if classifier is not None:
            info: ModelInfo = classifier.encoder.info
            for line in info.notices:
                warn(line)
            if not quiet:
                notice(f"{describe(info)} {NOT_LOADED}")
            return classifier, info
    encoder = load_model(settings, quiet)
    remember_model(cache, settings, encoder)
    spinner = contextlib.nullcontext if quiet else stderr.status
    n_prompts = sum(len(label.texts) for label in labels) * len(templates.templates)
    with spinner(f"embedding {n_prompts} prompts"):
        return Classifier(encoder, labels, templates, batch_size, cache), encoder.info


SERVER_CHECKED = ("device", "precision", "exact_decode", "pretrained")  # the server's to decide


def given_options(ctx: typer.Context) -> dict[str, Any]:
    """The model options given on the command line that a server must match (not defaults)."""
    return {
        name: ctx.params[name]
        for name in SERVER_CHECKED
        if name in ctx.params
        and getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"
    }


def connect_server(
    url: str, asked: str | None, quiet: bool, options: dict[str, Any] | None = None
) -> ServerClient:
    """The `clipcls serve` server at url, refused if it runs another model than asked, or
    otherwise than the options given explicitly (device, precision, ...) ask."""
    from clipcls.server.client import ServerClient
    from clipcls.server.expect import setting_conflict

    client = ServerClient(url)
    model, pretrained = client.model
    named = model_id(model, pretrained)
    if asked is not None and asked not in (model, named):
        raise UsageError(f"--model {asked}: the server at {client.url} runs {named}")
    conflict = setting_conflict(client, options or {})
    if conflict is not None:
        raise UsageError(f"{conflict}; drop the option, or use a server started with it")
    if not quiet:
        facts = client.facts
        where = f"({facts.get('device')}, {facts.get('precision')})"
        notice(f"model {named} on the server at {client.url} {where}")
    return client


def server_classifier(
    ctx: typer.Context, url: str, labels: tuple[Label, ...], templates: TemplateSet, quiet: bool
) -> tuple[RemoteClassifier, tuple[str, str | None]]:
    """Classify on a `clipcls serve` server: its model, named as it reports it; --model and
    the other model options, if given, only say how the server must run; --max-megapixels is
    checked here before a file is sent."""
    from clipcls.server.client import RemoteClassifier

    given = getattr(ctx.get_parameter_source("model"), "name", "DEFAULT") != "DEFAULT"
    client = connect_server(
        url, ctx.params.get("model") if given else None, quiet, given_options(ctx)
    )
    limit = ctx.params.get("max_megapixels", DEFAULT_MAX_MEGAPIXELS)
    return RemoteClassifier(client, labels, templates, limit), client.model
