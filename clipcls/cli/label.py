"""`clipcls label`: label whole trees to CSV or JSONL, resumably, and sort files by label."""

from __future__ import annotations

from pathlib import Path

import typer

from clipcls.backends.ray_data import check_ray
from clipcls.cli.backend_options import chosen_inputs, explicit, open_chosen_backend
from clipcls.cli.console import fail_if_strict, notice, reported_errors, stderr, tracked, warn
from clipcls.cli.fewshot_options import (
    CalibrationOpt,
    MultiLabelOpt,
    SupportOpt,
    ThresholdOpt,
    refuse_top_k,
    threshold_value,
)
from clipcls.cli.formats import LabelFormatOpt, as_format
from clipcls.cli.interrupts import InterruptGuard, exit_code_of
from clipcls.cli.label_report import report, say_interrupted
from clipcls.cli.model_options import model_options
from clipcls.cli.option_groups import LABELS, RUN, SCALE, labels_choice, run_options, scale_options
from clipcls.cli.options import (
    DryRunOpt,
    LabelOutputOpt,
    OverwriteOpt,
    PathsArg,
    RecordTopKOpt,
    ResumeOpt,
    SaveEmbeddingsOpt,
    SortIntoOpt,
    SortModeOpt,
    UnknownLabelOpt,
)
from clipcls.errors import UsageError
from clipcls.labeling.job import Summary
from clipcls.labeling.options import (
    LabelOptions,
    check_file_format,
    check_sorting,
    check_unknown_label,
    multi_label_options,
)
from clipcls.labeling.run import LabelEvents, label_tree
from clipcls.labeling.sorting import SortMode
from clipcls.output.formats import LABEL_FORMATS, format_for
from clipcls.settings import BackendName

EXAMPLES = """
[bold]Examples[/bold]

  clipcls label ~/Pictures --labels "cat,dog,landscape,food" --output labels.csv
  clipcls label ~/Pictures --labels "cat,dog,landscape,food" --output labels.csv --resume
  clipcls label shots/ --labels-file labels.txt -o out.jsonl --threshold 0.5 --top-k 3
  clipcls label inbox/ --labels cat,dog -o sorted.csv --sort-into sorted/ --mode move
  clipcls label --from-embeddings run.parquet --labels cat,dog,bird -o new.csv
  clipcls label shots/ --labels cat,dog -o out.csv --support examples/
  clipcls label shots/ --labels cat,dog -o out.csv --calibration cal.json --threshold auto
  clipcls label beach/ --labels dog,boat -o out.csv --multi-label --sort-into by-label/
"""


def _events(output: Path, show_progress: bool) -> LabelEvents:
    """The run's voice on stderr: notices, warnings, a progress bar, and how to resume."""

    def interrupted(interrupt: KeyboardInterrupt, summary: Summary, resumable: bool) -> None:
        say_interrupted(summary, output, resumable)
        raise typer.Exit(exit_code_of(interrupt)) from None

    return LabelEvents(
        notice=notice,
        warn=warn,
        track=lambda rows, total: tracked(rows, total, show_progress, "labeling"),
        interrupted=interrupted,
    )


@model_options()
@RUN.options()
@SCALE.options()
@LABELS.options()
def label(
    ctx: typer.Context,
    paths: PathsArg = None,
    *,
    output: LabelOutputOpt,
    fmt: LabelFormatOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    top_k: RecordTopKOpt = 1,
    threshold: ThresholdOpt = None,
    unknown_label: UnknownLabelOpt = None,
    sort_into: SortIntoOpt = None,
    mode: SortModeOpt = SortMode.COPY,
    dry_run: DryRunOpt = False,
    save_embeddings: SaveEmbeddingsOpt = False,
    support: SupportOpt = None,
    calibration: CalibrationOpt = None,
    multi_label: MultiLabelOpt = False,
) -> None:
    """Label every image under the paths into a CSV, JSONL or Parquet file, one row per file."""
    run, scale = run_options(ctx), scale_options(ctx)
    with reported_errors(run.debug):
        choice = labels_choice(ctx)
        inputs, saved = chosen_inputs(ctx, scale, run.quiet, paths)
        if scale.engine is BackendName.RAY:
            check_ray()  # before anything is locked or loaded
        kind = format_for(output, as_format(fmt), LABEL_FORMATS)
        check_file_format(kind, resume, save_embeddings)
        if (dry_run or explicit(ctx, "mode")) and sort_into is None:
            raise UsageError("--mode and --dry-run need --sort-into DIR")
        refuse_top_k(ctx, multi_label)
        cut = threshold_value(threshold)
        unknown = check_unknown_label(unknown_label, cut, choice.labels, multi_label)
        options = LabelOptions(
            top_k, cut, unknown, sort_into, mode, dry_run, save_embeddings, multi_label
        )
        options = multi_label_options(options, choice.labels)
        check_sorting(kind, options, inputs)
        if scale.server is not None and scale.engine is BackendName.RAY:
            raise UsageError("--server and --engine ray: give one or the other")
        backend = saved or open_chosen_backend(ctx, scale, run.quiet)
        result = label_tree(
            inputs,
            output,
            choice.labels,
            choice.templates,
            options,
            backend,
            kind=kind,
            resume=resume,
            overwrite=overwrite,
            include_hidden=run.include_hidden,
            events=_events(output, not run.quiet and stderr.is_terminal),
            guard=InterruptGuard(),
            walk=saved is None,
            support=support,
            calibration=calibration,
        )
        if result.started and not run.quiet:
            report(result.summary, output, options)
        fail_if_strict(run.strict, result.summary.failures)
