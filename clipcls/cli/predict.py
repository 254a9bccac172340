"""`clipcls predict`: classify images against labels and print the top-k for each."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from clipcls.cli.backend_options import chosen_inputs, open_chosen_backend
from clipcls.cli.clock import timing
from clipcls.cli.console import (
    check_output_path,
    check_terminal_output,
    fail_if_strict,
    notice,
    open_output,
    reported_errors,
    stderr,
    tracked,
    warn,
)
from clipcls.cli.fewshot_options import (
    CalibrationOpt,
    MultiLabelOpt,
    SupportOpt,
    ThresholdOpt,
    refuse_top_k,
    threshold_value,
)
from clipcls.cli.formats import PredictFormatOpt, as_format
from clipcls.cli.model_options import model_options
from clipcls.cli.option_groups import LABELS, RUN, SCALE, labels_choice, run_options, scale_options
from clipcls.cli.options import OverwriteOpt, PathsArg, UnknownLabelOpt
from clipcls.errors import UsageError
from clipcls.fewshot.runs import AUTO, calibrated_thresholds
from clipcls.labeling.options import check_multi_label, check_unknown_label
from clipcls.labeling.predict import count_images, predictions, write_predictions
from clipcls.labels import Label
from clipcls.output.formats import format_for
from clipcls.output.rows import MULTI_THRESHOLD, Columns, Threshold
from clipcls.output.writers import plural
from clipcls.prompts import TemplateSet

EXAMPLES = """
[bold]Examples[/bold]

  clipcls predict photos/ --labels cat,dog,car
  clipcls predict a.jpg b.png --labels-file labels.txt --templates simple --top-k 3
  find . -name '*.jpg' | clipcls predict - --labels cat,dog --format jsonl | jq .
  clipcls predict scans/ --labels "tumor,normal tissue" --templates histology -o out.csv
  clipcls predict photo.jpg --labels cat,dog --server http://127.0.0.1:8765
  clipcls predict --from-embeddings run.jsonl --labels cat,dog,bird
  clipcls predict shots/ --labels cat,dog --support examples/
  clipcls predict beach/ --labels dog,boat,person --multi-label --threshold 0.3 -o out.csv
"""


def _cut(threshold: str | None, multi_label: bool, calibration: Path | None) -> float | str | None:
    """--threshold: P or auto (with --calibration); a multi-label run's default is 0.5, a
    single-label run has none unless asked."""
    cut = threshold_value(threshold)
    if cut == AUTO and calibration is None:
        raise UsageError("--threshold auto needs --calibration FILE.json: it holds the thresholds")
    if multi_label and cut is None:
        return MULTI_THRESHOLD
    return cut


def _columns(
    top_k: int, labels: tuple[Label, ...], multi_label: bool, cut: float | str | None
) -> Columns:
    if multi_label:
        return Columns(1, multi_label=tuple(label.name for label in labels))
    return Columns(min(top_k, len(labels)), best_label=cut is not None)


def _resolved(
    cut: float | str | None,
    labels: tuple[Label, ...],
    templates: TemplateSet,
    calibration: Path | None,
    multi_label: bool,
) -> Threshold | None:
    if cut == AUTO and calibration is not None:
        return calibrated_thresholds(labels, templates, calibration, multi_label=multi_label)
    return None if cut is None else float(cut)


@model_options()
@RUN.options()
@SCALE.options(only=("server", "batch_size", "no_cache", "from_embeddings"))
@LABELS.options()
def predict(
    ctx: typer.Context,
    paths: PathsArg = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Labels shown per image.")] = 5,
    fmt: PredictFormatOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE, not stdout.")
    ] = None,
    overwrite: OverwriteOpt = False,
    support: SupportOpt = None,
    calibration: CalibrationOpt = None,
    multi_label: MultiLabelOpt = False,
    threshold: ThresholdOpt = None,
    unknown_label: UnknownLabelOpt = None,
) -> None:
    """Classify images against your labels and show the top-k labels of each."""
    run, scale = run_options(ctx), scale_options(ctx)
    quiet = run.quiet
    with reported_errors(run.debug):
        choice = labels_choice(ctx)
        refuse_top_k(ctx, multi_label)
        cut = _cut(threshold, multi_label, calibration)
        if multi_label:
            check_multi_label(choice.labels)
        unknown = check_unknown_label(unknown_label, cut, choice.labels, multi_label)
        inputs, saved = chosen_inputs(ctx, scale, quiet, paths)
        total = count_images(inputs, run.include_hidden, walk=saved is None)
        check_output_path(output, overwrite)
        kind = format_for(output, as_format(fmt))
        check_terminal_output(kind, output)
        backend = saved or open_chosen_backend(ctx, scale, quiet)
        found = predictions(
            backend,
            inputs,
            choice.labels,
            choice.templates,
            run.include_hidden,
            saved is None,
            support,
            calibration,
            notice=(lambda line: None) if quiet else notice,
            warn=warn,
            multi_label=multi_label,
        )
        limit = _resolved(cut, choice.labels, choice.templates, calibration, multi_label)
        show_progress = not quiet and stderr.is_terminal
        started = time.monotonic()
        with open_output(output) as stream:
            failures = write_predictions(
                found,
                kind,
                stream,
                _columns(top_k, choice.labels, multi_label, cut),
                str(output or "stdout"),
                lambda rows: tracked(rows, total, show_progress, "classifying"),
                warn,
                limit,
                unknown,
            )
        if not quiet and stderr.is_terminal:
            elapsed = time.monotonic() - started
            notice(f"{timing(total, elapsed)}; {failures} unreadable")
        elif failures and not quiet:
            notice(f"{failures} of {plural(total, 'image')} could not be read")
        fail_if_strict(run.strict, failures)
