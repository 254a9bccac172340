"""`clipcls evaluate`: zero-shot accuracy on folders already sorted by class."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from clipcls.backends.base import Backend, Hooks
from clipcls.cli.backend_options import chosen_name, open_chosen_backend
from clipcls.cli.console import fail_if_strict, open_output, progress_bar, reported_errors, stderr
from clipcls.cli.evaluate_options import (
    CalibrateOpt,
    ClassnamesOpt,
    DatasetArg,
    FoldsOpt,
    MaxPerClassOpt,
    ModelsOpt,
    MultiLabelOpt,
    OneTemplateOpt,
    PredictionsOpt,
    ReportOutputOpt,
    ReportPageOpt,
    SeedOpt,
    ShotsOpt,
    SupportOpt,
    TargetPrecisionOpt,
    TemplateSetsOpt,
    ThresholdOpt,
    TopKOpt,
)
from clipcls.cli.formats import ReportFormatOpt, as_format
from clipcls.cli.inputs import hooks
from clipcls.cli.model_options import model_options
from clipcls.cli.option_groups import RUN, SCALE, ScaleOptions, run_options, scale_options
from clipcls.cli.options import LabelsFileOpt, LabelsOpt, OverwriteOpt
from clipcls.evaluation.options import EvaluateOptions, OutputOptions, plan_evaluation
from clipcls.evaluation.report import write_outputs
from clipcls.evaluation.run import Advance, ShowProgress

EXAMPLES = """
[bold]Examples[/bold]

  clipcls evaluate dataset/            (dataset/cat/*.jpg, dataset/dog/*.jpg, ...)
  clipcls evaluate dataset/ --classnames names.txt --format json -o report.json
  clipcls evaluate dataset/ --templates openai --templates simple --templates photo
  clipcls evaluate dataset/ -m ViT-B-32 -m ViT-B-16:openai --max-per-class 50 --report out/
  clipcls evaluate dataset/ --from-embeddings run.parquet   (no image is read)
  clipcls evaluate dataset/ --shots 4 --folds 5               (zero-shot vs 4 examples per class)
  clipcls evaluate dataset/ --support examples/ --calibrate calibration.json
  clipcls evaluate --multi-label labels.csv --report out/   (labels.csv: path,labels "dog;boat")
"""


def _backends(
    ctx: typer.Context, scale: ScaleOptions, quiet: bool, models: list[str] | None
) -> Iterator[Backend]:
    """One backend per model, each opened when its turn comes; a server runs its one model, a
    saved file holds one model's embeddings."""
    if chosen_name(scale) in ("server", "embeddings"):
        yield open_chosen_backend(ctx, scale, quiet, model=models[0] if models else None)
        return
    asked: list[str | None] = [*models] if models else [None]  # None: the user's default
    for model in asked:
        yield open_chosen_backend(ctx, scale, quiet, model=model)


def _progress(quiet: bool) -> ShowProgress:
    """A progress bar for each model's images on stderr, when it is a terminal."""
    show = not quiet and stderr.is_terminal

    @contextlib.contextmanager
    def embedding(total: int) -> Iterator[Advance]:
        with progress_bar(disable=not show) as progress:
            task = progress.add_task("embedding images", total=total)
            yield lambda done: progress.advance(task, done)

    return embedding


@model_options(skip=("model",))
@RUN.options()
@SCALE.options()
def evaluate(
    ctx: typer.Context,
    dataset_dir: DatasetArg = None,
    multi_label: MultiLabelOpt = None,
    label_list: LabelsOpt = None,
    labels_file: LabelsFileOpt = None,
    threshold: ThresholdOpt = None,
    classnames: ClassnamesOpt = None,
    templates: TemplateSetsOpt = None,
    template: OneTemplateOpt = None,
    models: ModelsOpt = None,
    top_k: TopKOpt = None,
    fmt: ReportFormatOpt = None,
    output: ReportOutputOpt = None,
    predictions: PredictionsOpt = None,
    max_per_class: MaxPerClassOpt = None,
    seed: SeedOpt = 0,
    shots: ShotsOpt = None,
    folds: FoldsOpt = None,
    support: SupportOpt = None,
    calibrate: CalibrateOpt = None,
    target_precision: TargetPrecisionOpt = None,
    report_file: ReportPageOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Measure zero-shot accuracy on a folder whose subfolders are the classes (against a
    support set with --shots or --support), and its calibration; or, with --multi-label, the
    mAP of every label that applies."""
    flags, scale = run_options(ctx), scale_options(ctx)
    with reported_errors(flags.debug):
        options = EvaluateOptions(
            dataset=dataset_dir, multi_label=multi_label, labels=label_list,
            labels_file=labels_file, threshold=threshold, classnames=classnames,
            templates=templates or (), template=template or (), models=models or (),
            top_k=top_k or (), max_per_class=max_per_class, seed=seed, shots=shots, folds=folds,
            support=support, include_hidden=flags.include_hidden, server=scale.server,
            engine=scale.engine.value, embeddings=scale.from_embeddings,
        )  # fmt: skip
        outputs = OutputOptions(
            output=output, kind=as_format(fmt), predictions=predictions, report=report_file,
            calibrate=calibrate, target_precision=target_precision, overwrite=overwrite,
        )  # fmt: skip
        plan = plan_evaluation(options, outputs)
        # the voice of the run and its files: their notices unless quiet, every warning
        voice = hooks()
        voice = Hooks(warn=voice.warn, status=voice.status) if flags.quiet else voice
        report = plan.evaluate(
            _backends(ctx, scale, flags.quiet, models), voice, _progress(flags.quiet)
        )
        written = write_outputs(report, plan.outputs, lambda: open_output(output), voice)
        fail_if_strict(flags.strict, written.failures)
