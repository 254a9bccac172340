"""`clipcls evaluate`: zero-shot accuracy on folders already sorted by class."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from clipcls.backends.ray_data import check_ray
from clipcls.cache import EmbeddingCache
from clipcls.classify import default_batch_size
from clipcls.cli.console import (
    check_output_path,
    fail_if_strict,
    notice,
    open_output,
    progress_bar,
    reported_errors,
    stderr,
    warn,
)
from clipcls.cli.formats import ReportFormatOpt, as_format
from clipcls.cli.inputs import (
    NOT_LOADED,
    connect_server,
    describe,
    given_options,
    load_model,
    open_cache,
)
from clipcls.cli.model_options import model_options, model_settings
from clipcls.cli.option_groups import RUN, SCALE, run_options, scale_options
from clipcls.cli.options import OverwriteOpt
from clipcls.errors import ClipclsError, UsageError
from clipcls.evaluation.dataset import (
    Dataset,
    EmbeddedDataset,
    assemble,
    class_labels,
    embed_dataset,
    load_dataset,
)
from clipcls.evaluation.exports import json_document, write_predictions
from clipcls.evaluation.scoring import Evaluation, evaluate_embedded
from clipcls.evaluation.terminal import print_results
from clipcls.labels import Label
from clipcls.output.files import Format, check_page, format_for, page_path
from clipcls.output.rows import clean_text
from clipcls.output.writers import plain_console
from clipcls.pipeline import Encoder, ModelInfo
from clipcls.prompts import DEFAULT_TEMPLATES, TemplateSet, load_templates, single_templates
from clipcls.recorded import ModelNeeded, recorded_model, remember_model
from clipcls.settings import DEFAULT_MODEL, BackendName, ModelSettings

EXAMPLES = """
[bold]Examples[/bold]

  clipcls evaluate dataset/            (dataset/cat/*.jpg, dataset/dog/*.jpg, ...)
  clipcls evaluate dataset/ --classnames names.txt --format json -o report.json
  clipcls evaluate dataset/ --templates openai --templates simple --templates photo
  clipcls evaluate dataset/ -m ViT-B-32 -m ViT-B-16:openai --max-per-class 50 --report out/
"""


def _template_sets(templates: list[str] | None, template: list[str] | None) -> list[TemplateSet]:
    sets = [load_templates(name) for name in templates or []]
    if template:
        sets.append(single_templates(template))
    return sets or [load_templates(DEFAULT_TEMPLATES)]


@dataclass(frozen=True)
class RayPlan:
    """Where a Ray run goes: the cluster (None: $RAY_ADDRESS or a local one) and its actors."""

    address: str | None
    actors: int | None


@dataclass(frozen=True)
class EvalRun:
    """What every model of an evaluate run is scored on, and how."""

    dataset: Dataset
    labels: tuple[Label, ...]
    template_sets: list[TemplateSet]
    batch_size: int | None
    ks: tuple[int, ...]
    quiet: bool


def _evaluate_model(
    settings: ModelSettings, run: EvalRun, cache: EmbeddingCache | None, ray: RayPlan | None
) -> list[Evaluation]:
    """Embed the images once with this model, then score them with every template set; from
    the cache alone, without loading the model, where it holds every embedding needed."""
    recorded = recorded_model(cache, settings) if ray is None else None
    if recorded is not None:
        try:
            results = _evaluate_with(recorded, settings, run, cache, ray)
        except ModelNeeded:
            pass  # something is not cached: load the model and start again
        else:
            if not run.quiet:
                notice(f"{describe(recorded.info)} {NOT_LOADED}")
            return results
    encoder = load_model(settings, run.quiet)  # on a Ray run, for the text tower only
    remember_model(cache, settings, encoder)
    return _evaluate_with(encoder, settings, run, cache, ray)


def _evaluate_with(
    encoder: Encoder,
    settings: ModelSettings,
    run: EvalRun,
    cache: EmbeddingCache | None,
    ray: RayPlan | None,
) -> list[Evaluation]:
    dataset = run.dataset
    if ray is not None:
        from clipcls.backends.ray_data import connect, embed_on_ray

        connect(ray.address)
        with stderr.status(f"embedding {len(dataset.paths)} images on Ray"):
            found = embed_on_ray(
                dataset.paths, settings, run.batch_size, ray.actors, cache is not None
            )
        data = assemble(dataset, found)
    else:
        batch_size = run.batch_size or default_batch_size(encoder.plan.device)
        show = not run.quiet and stderr.is_terminal
        with progress_bar(disable=not show) as progress:
            task = progress.add_task("embedding images", total=len(dataset.paths))
            data = embed_dataset(
                encoder, dataset, batch_size, lambda n: progress.advance(task, n), cache
            )
    info: ModelInfo = encoder.info
    return _scored(encoder, run, data, (info.model, info.pretrained), cache)


def _scored(
    encoder: Encoder,
    run: EvalRun,
    data: EmbeddedDataset,
    model: tuple[str, str | None],
    cache: EmbeddingCache | None,
) -> list[Evaluation]:
    """The embedded images scored with every template set of the run."""
    results = []
    for templates in run.template_sets:
        with stderr.status(f"scoring with templates {templates.name}"):
            results.append(
                evaluate_embedded(encoder, run.labels, templates, data, model, run.ks, cache)
            )
    return results


def _evaluate_on_server(
    url: str, model: str | None, run: EvalRun, ctx: typer.Context
) -> list[Evaluation]:
    """Images embedded by a `clipcls serve` server, scored here with its text tower; the model
    options given must match the server's, and --max-megapixels is checked here."""
    from clipcls.server.client import RemoteClassifier, RemoteEncoder

    client = connect_server(url, model, run.quiet, given_options(ctx))
    limit = model_settings(ctx).max_megapixels
    remote = RemoteClassifier(client, run.labels, run.template_sets[0], limit)
    remote.embeddings = True
    paths = run.dataset.paths
    with stderr.status(f"embedding {len(paths)} images on the server"):
        found = {p.path: (p.embedding, p.error) for p in remote.classify_paths(paths)}
    data = assemble(run.dataset, found)
    return _scored(RemoteEncoder(client), run, data, client.model, None)


def _write_report(page: Path, evaluations: list[Evaluation], dataset: Path) -> None:
    from clipcls.evaluation.html import write_report

    with stderr.status("drawing the report"):
        page.parent.mkdir(exist_ok=True)  # --report out/ names a folder that may be new
        write_report(page, evaluations, dataset)


def _saved(write: Callable[..., None], *args: Any) -> bool:
    """Run one output writer; say why it failed instead of stopping the others."""
    try:
        write(*args)
    except Exception as error:  # a rendering library's surprise must not lose the results
        reason = clean_text(str(error) or type(error).__name__)
        warn(f"cannot write {clean_text(str(args[0]))}: {reason}")
        return False
    return True


@model_options(skip=("model",))
@RUN.options()
@SCALE.options()
def evaluate(
    ctx: typer.Context,
    dataset_dir: Annotated[
        Path,
        typer.Argument(help="Folder with one subfolder of images per class.", show_default=False),
    ],
    classnames: Annotated[
        Path | None,
        typer.Option(
            "--classnames",
            exists=True,
            dir_okay=False,
            help="`folder: name | alias | description` lines for the class texts.",
        ),
    ] = None,
    templates: Annotated[
        list[str] | None,
        typer.Option(
            "--templates",
            "-t",
            help="Template set or FILE; repeat to compare.",
            show_default=DEFAULT_TEMPLATES,
        ),
    ] = None,
    template: Annotated[
        list[str] | None,
        typer.Option("--template", help='One template such as "a photo of a {}."; repeatable.'),
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Model (ARCH, ARCH:TAG, hf-hub:, local-dir:); repeat to compare.",
            show_default=DEFAULT_MODEL,
        ),
    ] = None,
    top_k: Annotated[
        list[int] | None,
        typer.Option("--top-k", "-k", min=1, help="Top-k accuracies to report.", show_default="5"),
    ] = None,
    fmt: ReportFormatOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the report to FILE.")
    ] = None,
    predictions: Annotated[
        Path | None, typer.Option("--predictions", help="Per-image CSV of the predictions.")
    ] = None,
    max_per_class: Annotated[
        int | None, typer.Option("--max-per-class", min=1, help="Random N images per class.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for --max-per-class.")] = 0,
    report_file: Annotated[
        str | None,
        typer.Option(
            "--report",
            help="Write a self-contained HTML report to FILE (DIR/ writes DIR/index.html).",
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Measure zero-shot accuracy on a folder whose subfolders are the classes."""
    flags, scale = run_options(ctx), scale_options(ctx)  # `run` is the EvalRun below
    quiet, include_hidden, strict = flags.quiet, flags.include_hidden, flags.strict
    engine, ray_address, ray_actors = scale.engine, scale.ray_address, scale.ray_actors
    server, batch_size, no_cache = scale.server, scale.batch_size, scale.no_cache
    with reported_errors(flags.debug):
        if engine is BackendName.RAY:
            check_ray()
        dataset = load_dataset(dataset_dir, max_per_class, seed, include_hidden)
        labels = class_labels(dataset.classes, classnames)
        template_sets = _template_sets(templates, template)
        check_output_path(output, overwrite)
        kind = format_for(output, as_format(fmt), (Format.TABLE, Format.JSON))
        check_output_path(predictions, overwrite, "--predictions")
        page = page_path(report_file) if report_file is not None else None
        named = [path.resolve() for path in (output, predictions, page) if path is not None]
        if len(set(named)) < len(named):  # the last written would silently replace the other
            raise UsageError("--output, --predictions and --report must name different files")
        if page is not None:
            check_page(page, overwrite)
            from clipcls.evaluation.html import require_matplotlib

            require_matplotlib()
        ks = tuple(sorted({5, *(top_k or [])} - {1}))  # top-1 and top-5 always; -k adds
        run = EvalRun(dataset, labels, template_sets, batch_size, ks, quiet)
        evaluations: list[Evaluation] = []
        if server is not None:
            if engine is BackendName.RAY or len(models or []) > 1:
                raise UsageError("--server evaluates the server's one model (no --engine ray)")
            evaluations = _evaluate_on_server(server, models[0] if models else None, run, ctx)
        for model in [] if server is not None else models or [DEFAULT_MODEL]:
            settings = model_settings(ctx, model)
            plan = RayPlan(ray_address, ray_actors) if engine is BackendName.RAY else None
            evaluations += _evaluate_model(settings, run, open_cache(settings, no_cache), plan)
        for _, _, error in evaluations[0].data.failures:  # the same files fail for every model
            warn(clean_text(error))
        with open_output(output) as stream:
            if kind is Format.JSON:
                stream.write(json_document(evaluations) + "\n")
            else:
                print_results(plain_console(file=stream), evaluations)
        # Each output on its own: one that fails never costs the others the embedding work.
        unwritten = []
        if predictions is not None and not _saved(write_predictions, predictions, evaluations):
            unwritten.append(str(predictions))
        elif predictions is not None and not quiet:
            notice(f"wrote per-image predictions to {clean_text(str(predictions))}")
        drawing = (_write_report, page, evaluations, dataset_dir)
        if page is not None and not _saved(*drawing):
            unwritten.append(str(page))
        elif page is not None and not quiet:
            notice(f"wrote the report to {clean_text(str(page))}")
        if unwritten:
            raise ClipclsError(f"could not write {', '.join(unwritten)} (see above)")
        fail_if_strict(strict, len(evaluations[0].data.failures))
