"""`clipcls evaluate`: zero-shot accuracy on folders already sorted by class."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import typer

from clipcls.backends.base import Backend
from clipcls.backends.ray_data import check_ray
from clipcls.cli.backend_options import chosen_name, open_chosen_backend
from clipcls.cli.console import (
    fail_if_strict,
    notice,
    open_output,
    progress_bar,
    reported_errors,
    stderr,
    warn,
)
from clipcls.cli.evaluate_multilabel import (
    MultiLabelAsk,
    evaluate_multi_label,
    refuse_class_folder_options,
)
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
    calibration_target,
    check_outputs,
    few_shot_plan,
    report_saved,
    template_sets,
    top_ks,
)
from clipcls.cli.formats import ReportFormatOpt
from clipcls.cli.inputs import hooks
from clipcls.cli.model_options import model_options
from clipcls.cli.option_groups import RUN, SCALE, ScaleOptions, run_options, scale_options
from clipcls.cli.options import LabelsFileOpt, LabelsOpt, OverwriteOpt
from clipcls.errors import UsageError
from clipcls.evaluation.calibrate import calibrated, reached
from clipcls.evaluation.dataset import class_labels, load_dataset
from clipcls.evaluation.fewshot import FewShotPlan
from clipcls.evaluation.outputs import save_files, write_results
from clipcls.evaluation.run import Advance, EvaluationRun, ShowProgress, run_evaluation
from clipcls.evaluation.scoring import Evaluation
from clipcls.output.rows import clean_text
from clipcls.settings import DEFAULT_MODEL, BackendName

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
    for model in models or [DEFAULT_MODEL]:
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


def _notes(evaluations: list[Evaluation]) -> tuple[str, ...]:
    """The few-shot notes, once: the same classes are too small for every model."""
    found = evaluations[0].few_shot
    return found.notes if found is not None else ()


def _save(
    evaluations: list[Evaluation],
    dataset_dir: Path,
    predictions: Path | None,
    page: Path | None,
    quiet: bool,
) -> None:
    """Write the per-image CSV and the page, each on its own; say which could not be written."""
    report_saved(save_files(evaluations, dataset_dir, predictions, page, hooks()), quiet)


def _calibrate(
    evaluations: list[Evaluation],
    path: Path,
    precision: float,
    plan: FewShotPlan | None,
    quiet: bool,
) -> list[Evaluation]:
    """Fit the calibration on the one setup's images, write it whole, and say what it did."""
    files = plan.support if plan is not None else None
    evaluation = calibrated(evaluations[0], precision, files.identity() if files else None)
    fitted = evaluation.calibrated
    assert fitted is not None
    fitted.write(path)
    if not quiet:
        notice(
            f"wrote the calibration to {clean_text(str(path))}: temperature "
            f"{fitted.temperature:g}, ECE {fitted.ece_before:.1%} -> {fitted.ece_after:.1%}, "
            f"{reached(fitted)} of {len(fitted.labels)} labels reach {precision:g} precision"
        )
    return [evaluation]


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
        given = {
            "DATASET": dataset_dir is not None,
            "--classnames": classnames is not None,
            "--max-per-class": max_per_class is not None,
            "--shots": shots is not None,
            "--folds": folds is not None,
            "--support": support is not None,
            "--top-k": bool(top_k),
            "--labels": label_list is not None,
            "--labels-file": labels_file is not None,
            "--threshold": threshold is not None,
        }
        refuse_class_folder_options(given, multi_label is not None)
        if scale.engine is BackendName.RAY:
            check_ray()
        if multi_label is not None:
            ask = MultiLabelAsk(
                multi_label, label_list, labels_file, templates, template, models, threshold, fmt,
                output, predictions, report_file, calibrate, target_precision, overwrite,
            )  # fmt: skip
            backends = _backends(ctx, scale, flags.quiet, models)
            evaluate_multi_label(ask, backends, _progress(flags.quiet), flags.quiet, flags.strict)
            return
        if dataset_dir is None:
            raise UsageError("give DATASET (a folder of class folders) or --multi-label LABELS.csv")
        if chosen_name(scale) == "embeddings" and len(models or []) > 1:
            raise UsageError("--from-embeddings holds one model's embeddings: give one --model")
        dataset = load_dataset(dataset_dir, max_per_class, seed, flags.include_hidden)
        labels = class_labels(dataset.classes, classnames)
        sets = template_sets(templates, template)
        plan = few_shot_plan(labels, shots, folds, seed, support, flags.include_hidden)
        n_setups = len(sets) * max(len(models or []), 1)
        precision = calibration_target(calibrate, target_precision, shots, n_setups, overwrite)
        run = EvaluationRun(dataset, labels, sets, top_ks(top_k), plan)
        kind, page = check_outputs(output, fmt, predictions, report_file, overwrite, calibrate)
        if scale.server is not None and (scale.engine is BackendName.RAY or len(models or []) > 1):
            raise UsageError("--server evaluates the server's one model (no --engine ray)")
        backends = _backends(ctx, scale, flags.quiet, models)
        evaluations = run_evaluation(backends, run, hooks(), _progress(flags.quiet))
        for _, _, error in evaluations[0].data.failures:  # the same files fail for every model
            warn(clean_text(error))
        for line in (
            *(plan.support.notes() if plan and plan.support else ()),
            *_notes(evaluations),
        ):
            warn(line)
        if calibrate is not None:
            evaluations = _calibrate(evaluations, calibrate, precision, plan, flags.quiet)
        with open_output(output) as stream:
            write_results(stream, evaluations, kind)
        # Each file on its own: one that fails never costs the others the embedding work.
        _save(evaluations, dataset_dir, predictions, page, flags.quiet)
        fail_if_strict(flags.strict, len(evaluations[0].data.failures))
