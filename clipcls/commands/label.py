"""`clipcls label`: label whole trees to CSV or JSONL, resumably, and sort files by label."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from clipcls.commands.common import (
    BatchSizeOpt,
    LabelsFileOpt,
    LabelsOpt,
    PathsArg,
    QuietOpt,
    TemplateOpt,
    TemplatesOpt,
    load_classifier,
    open_cache,
    read_inputs,
    read_labels,
    read_templates,
)
from clipcls.errors import ClipclsError, ExitStatus, UsageError
from clipcls.images import DEFAULT_MAX_MEGAPIXELS, iter_image_paths
from clipcls.labeling import LabelJob, LabelOptions, Summary
from clipcls.options import (
    CacheDirOpt,
    DebugOpt,
    DeviceOpt,
    ExactDecodeOpt,
    IncludeHiddenOpt,
    InterruptGuard,
    MaxMegapixelsOpt,
    ModelOpt,
    NoCacheOpt,
    OfflineOpt,
    PrecisionOpt,
    PretrainedOpt,
    StrictOpt,
    WorkersOpt,
    fail_if_strict,
    notice,
    open_output,
    reported_errors,
    stderr,
    tracked,
    warn,
)
from clipcls.outputs import OutputKind, Recovered, check_target, output_kind, recover
from clipcls.prompts import DEFAULT_TEMPLATES
from clipcls.render import Format, Writer, make_writer
from clipcls.rows import DEFAULT_UNKNOWN, Columns, clean_text
from clipcls.settings import DEFAULT_MODEL, Device, ModelSettings, Precision, model_id
from clipcls.sorting import SortMode

EXAMPLES = """
[bold]Examples[/bold]

  clipcls label ~/Pictures --labels "cat,dog,landscape,food" --output labels.csv
  clipcls label ~/Pictures --labels "cat,dog,landscape,food" --output labels.csv --resume
  clipcls label shots/ --labels-file labels.txt -o out.jsonl --threshold 0.5 --top-k 3
  clipcls label inbox/ --labels cat,dog -o sorted.csv --sort-into sorted/ --mode move
"""
SORT_PANEL = "Sorting into folders"


def _recover(output: Path, kind: OutputKind, columns: Columns) -> Recovered:
    """Read the file being resumed, dropping a partial last line."""
    recovered = recover(output, kind, columns)
    if recovered.dropped_bytes:
        notice(f"dropped a partial last line ({recovered.dropped_bytes} bytes) from {output}")
    return recovered


def _say_interrupted(job: LabelJob, output: Path) -> None:
    stderr.print(
        f"interrupted: {job.summary.processed} images labeled in this run; "
        f"{output} holds only complete rows. Resume with:",
        style="yellow",
        soft_wrap=True,
        markup=False,
    )
    stderr.print(_resume_command(), markup=False, soft_wrap=True)


RESUME_HINT = "run the same command with --resume once the problem is fixed"


def _resume_command() -> str:
    args = [a for a in sys.argv[1:] if a not in ("--overwrite", "--resume")]
    return shlex.join(["clipcls", *args, "--resume"])


def _report(summary: Summary, output: Path) -> None:
    notice(f"labeled into {output}:")
    table = Table(header_style="bold")
    table.add_column("label")
    table.add_column("images", justify="right")
    for label, count in summary.per_label.most_common():
        table.add_row(label, str(count))
    if summary.failures:
        table.add_row("[red]unreadable[/red]", str(summary.failures))
    stderr.print(table)
    elapsed = time.monotonic() - summary.started
    skipped = f", {summary.skipped} already done" if summary.skipped else ""
    notice(
        f"{summary.processed} images in {elapsed:.1f} s ({summary.rate():.1f} images/s){skipped}"
    )


def _run(
    job: LabelJob, paths: list[str], writer: Writer, total: int, show: bool, hidden: bool
) -> None:
    """Write each row, then place its file; Ctrl-C never splits the two."""
    guard = InterruptGuard()
    with guard.installed():
        for recorded in job.pending_placements():
            with guard.section():
                job.place(recorded)
        walk = iter_image_paths(paths, hidden, exclude=job.options.sort_into)
        for row in tracked(job.rows(walk), total, show, "labeling"):
            with guard.section():
                writer.write(row)
                job.place(row)
            if row.error is not None:
                warn(row.error)


def label(
    paths: PathsArg,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="CSV or JSONL file to write (by extension).")
    ],
    labels: LabelsOpt = None,
    labels_file: LabelsFileOpt = None,
    templates: TemplatesOpt = DEFAULT_TEMPLATES,
    template: TemplateOpt = None,
    fmt: Annotated[
        OutputKind | None,
        typer.Option("--format", "-f", help="csv or jsonl [default: from the extension]"),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an existing output; skip done images.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing output.")
    ] = False,
    top_k: Annotated[
        int, typer.Option("--top-k", "-k", min=1, help="Also record the next labels.")
    ] = 1,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            min=0.0,
            max=1.0,
            help="Top probability below P gets the unknown label.",
        ),
    ] = None,
    unknown_label: Annotated[
        str, typer.Option("--unknown-label", help="Label for images below --threshold.")
    ] = DEFAULT_UNKNOWN,
    sort_into: Annotated[
        Path | None,
        typer.Option(
            "--sort-into",
            file_okay=False,
            rich_help_panel=SORT_PANEL,
            help="Put each image in DIR/<label>/.",
        ),
    ] = None,
    mode: Annotated[
        SortMode, typer.Option("--mode", rich_help_panel=SORT_PANEL, help="How files get there.")
    ] = SortMode.COPY,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            rich_help_panel=SORT_PANEL,
            help="Record planned destinations; touch no files.",
        ),
    ] = False,
    batch_size: BatchSizeOpt = None,
    quiet: QuietOpt = False,
    model: ModelOpt = DEFAULT_MODEL,
    pretrained: PretrainedOpt = None,
    device: DeviceOpt = Device.AUTO,
    precision: PrecisionOpt = Precision.AUTO,
    cache_dir: CacheDirOpt = None,
    offline: OfflineOpt = False,
    exact_decode: ExactDecodeOpt = False,
    include_hidden: IncludeHiddenOpt = False,
    max_megapixels: MaxMegapixelsOpt = DEFAULT_MAX_MEGAPIXELS,
    strict: StrictOpt = False,
    workers: WorkersOpt = None,
    no_cache: NoCacheOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Label every image under the paths into a CSV or JSONL file, one row per file."""
    with reported_errors(debug):
        label_list = read_labels(labels, labels_file)
        template_set = read_templates(templates, template)
        inputs = read_inputs(paths)
        kind = output_kind(output, fmt)
        check_target(output, resume, overwrite)
        if (dry_run or mode is not SortMode.COPY) and sort_into is None:
            raise UsageError("--mode and --dry-run need --sort-into DIR")
        options = LabelOptions(top_k, threshold, unknown_label, sort_into, mode, dry_run)
        columns = options.columns(len(label_list))
        recovered = _recover(output, kind, columns) if resume else None
        done = recovered.done if recovered is not None else set()
        walk = iter_image_paths(inputs, include_hidden, exclude=sort_into)
        total = sum(1 for p in walk if clean_text(str(p)) not in done)
        if total == 0 and not done:
            raise UsageError(f"no images found in {', '.join(inputs)}")
        settings = ModelSettings(
            model,
            pretrained,
            device,
            precision,
            cache_dir,
            offline,
            exact_decode,
            workers,
            max_megapixels,
        )
        classifier, info = load_classifier(
            settings, label_list, template_set, batch_size, quiet, open_cache(settings, no_cache)
        )
        job = LabelJob(classifier, options, model_id(info.model, info.pretrained), recovered)
        append = recovered is not None and output.exists() and output.stat().st_size > 0
        with open_output(output, append) as stream:
            writer = make_writer(Format(kind.value), stream, columns, header=not append)
            try:
                _run(job, inputs, writer, total, not quiet and stderr.is_terminal, include_hidden)
            except KeyboardInterrupt:
                stream.flush()
                _say_interrupted(job, output)
                raise typer.Exit(int(ExitStatus.INTERRUPTED)) from None
            except OSError as error:
                raise ClipclsError(
                    f"cannot write {output}: {error.strerror or error}; it holds every complete "
                    f"row, so {RESUME_HINT}"
                ) from None
            except ClipclsError as error:  # such as the device running out of memory
                stream.flush()
                message = f"{error}; {output} holds every complete row, so {RESUME_HINT}"
                raise type(error)(message) from None
            writer.close()
        if not quiet:
            _report(job.summary, output)
        fail_if_strict(strict, job.summary.failures)


label.__doc__ = (label.__doc__ or "") + "\n" + EXAMPLES
