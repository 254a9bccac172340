"""`clipcls evaluate --multi-label LABELS.csv`: every label that applies to each image, judged
by mAP, per-label AP and the counts at a threshold; the CSV is the dataset."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from clipcls.backends.base import Backend
from clipcls.cli.console import check_output_path, fail_if_strict, notice, open_output, warn
from clipcls.cli.evaluate_options import check_outputs, report_saved, template_sets
from clipcls.cli.formats import ReportFormat
from clipcls.cli.inputs import hooks
from clipcls.errors import UsageError
from clipcls.evaluation.multilabel import (
    DEFAULT_THRESHOLD,
    MultiLabelEvaluation,
    MultiLabelRun,
    evaluate_multilabel,
)
from clipcls.evaluation.multilabel_calibrate import calibrated_multilabel
from clipcls.evaluation.multilabel_outputs import (
    calibration_line,
    write_multilabel_predictions,
    write_multilabel_results,
)
from clipcls.evaluation.outputs import Saved, attempt
from clipcls.evaluation.run import ShowProgress
from clipcls.labels import Label, parse_labels, read_labels_file
from clipcls.output.rows import clean_text


@dataclass(frozen=True)
class MultiLabelAsk:
    """What `evaluate --multi-label` was asked, as the options gave it."""

    source: Path
    labels: str | None = None
    labels_file: Path | None = None
    templates: list[str] | None = None
    template: list[str] | None = None
    models: list[str] | None = None
    threshold: float | None = None
    fmt: ReportFormat | None = None
    output: Path | None = None
    predictions: Path | None = None
    report_file: str | None = None
    calibrate: Path | None = None
    target_precision: float | None = None
    overwrite: bool = False


def refuse_class_folder_options(given: dict[str, bool], multi_label: bool) -> None:
    """UsageError for an option of the other mode: class folders' options with --multi-label,
    and --multi-label's own without it."""
    own = {"--labels", "--labels-file", "--threshold"}
    for name, present in given.items():
        if present and multi_label and name not in own:
            raise UsageError(
                f"--multi-label reads its images and labels from the CSV: {name} does not apply"
            )
        if present and not multi_label and name in own:
            raise UsageError(f"{name} is for --multi-label LABELS.csv")


def _labels(ask: MultiLabelAsk) -> tuple[Label, ...] | None:
    """The label set --labels or --labels-file gives (one of them), else None: the CSV's."""
    if ask.labels is not None and ask.labels_file is not None:
        raise UsageError("give one of --labels or --labels-file")
    if ask.labels is not None:
        return parse_labels(ask.labels)
    return read_labels_file(ask.labels_file) if ask.labels_file is not None else None


def _check(ask: MultiLabelAsk) -> MultiLabelRun:
    """The run, every option and the CSV checked, before any model loads."""
    sets = template_sets(ask.templates, ask.template)
    if len(sets) > 1 or len(ask.models or []) > 1:
        raise UsageError("--multi-label evaluates one model and one template set: give one of each")
    threshold = DEFAULT_THRESHOLD if ask.threshold is None else ask.threshold
    if not 0.0 <= threshold <= 1.0:  # a NaN too: an ask built in Python skips typer
        raise UsageError(f"--threshold must be in 0-1, not {threshold}")
    precision = ask.target_precision
    if precision is not None and not 0 < precision <= 1:
        raise UsageError(f"--target-precision must be in (0, 1], not {precision}")
    if precision is not None and ask.calibrate is None:
        raise UsageError("--target-precision sets --calibrate's thresholds: give --calibrate")
    check_output_path(ask.calibrate, ask.overwrite, "--calibrate")
    return MultiLabelRun.from_csv(ask.source, sets[0], _labels(ask), threshold)


def _warnings(evaluation: MultiLabelEvaluation) -> None:
    for _, error in evaluation.failures:
        warn(clean_text(error))
    for j in evaluation.metrics.without_positives:
        warn(
            f"label {clean_text(evaluation.names[j])} has no image in the CSV: its AP is 0 "
            "(as scikit-learn's), which lowers the mAP"
        )


def _calibrate(
    evaluation: MultiLabelEvaluation, ask: MultiLabelAsk, quiet: bool
) -> MultiLabelEvaluation:
    """Fit the logistic per label and the thresholds, write the file whole, say what it did."""
    assert ask.calibrate is not None
    evaluation = calibrated_multilabel(evaluation, ask.target_precision)
    fitted = evaluation.calibrated
    assert fitted is not None
    fitted.calibration.write(ask.calibrate)
    if not quiet:
        where = clean_text(str(ask.calibrate))
        notice(f"wrote the calibration to {where}: {calibration_line(evaluation)}")
    return evaluation


def _save(
    evaluation: MultiLabelEvaluation, ask: MultiLabelAsk, page: Path | None, quiet: bool
) -> None:
    """Write the per-image CSV and the page, each on its own; say which could not be written."""
    outcomes: list[Saved] = []
    if ask.predictions is not None:
        path = ask.predictions
        outcomes.append(
            attempt(
                path,
                "per-image predictions",
                lambda: write_multilabel_predictions(path, evaluation),
            )
        )
    if page is not None:
        from clipcls.evaluation.html_multilabel import write_multilabel_report

        with hooks().status("drawing the report"):
            outcomes.append(
                attempt(page, "the report", lambda: write_multilabel_report(page, evaluation))
            )
    report_saved(outcomes, quiet)


def evaluate_multi_label(
    ask: MultiLabelAsk,
    backends: Iterator[Backend],
    progress: ShowProgress,
    quiet: bool = False,
    strict: bool = False,
) -> None:
    """Check everything, evaluate the one model, write the report and the files asked for."""
    run = _check(ask)
    kind, page = check_outputs(
        ask.output, ask.fmt, ask.predictions, ask.report_file, ask.overwrite, ask.calibrate
    )
    evaluation = evaluate_multilabel(next(backends), run, hooks(), progress)
    _warnings(evaluation)
    if ask.calibrate is not None:
        evaluation = _calibrate(evaluation, ask, quiet)
    with open_output(ask.output) as stream:
        write_multilabel_results(stream, evaluation, kind)
    _save(evaluation, ask, page, quiet)
    fail_if_strict(strict, len(evaluation.failures))
