"""`clipcls label`: label whole trees to CSV or JSONL, resumably, and sort files by label."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import typer

from clipcls.backends.ray_data import check_ray
from clipcls.classify import Classifier
from clipcls.cli.console import fail_if_strict, notice, reported_errors, stderr, tracked, warn
from clipcls.cli.formats import LabelFormatOpt, as_format
from clipcls.cli.inputs import load_classifier, open_cache, read_inputs, server_classifier
from clipcls.cli.interrupts import InterruptGuard, exit_code_of
from clipcls.cli.label_report import report, say_interrupted
from clipcls.cli.model_options import model_options, model_settings
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
    ThresholdOpt,
    UnknownLabelOpt,
)
from clipcls.engine.sources import check_model_name, model_identity
from clipcls.errors import ClipclsError, UsageError
from clipcls.images import MARKER, iter_image_paths
from clipcls.labeling.job import Classify, LabelJob, is_done
from clipcls.labeling.label_file import LabelOutput, begin, check_loaded_model, open_label_output
from clipcls.labeling.manifest import RunSetup
from clipcls.labeling.options import (
    LabelOptions,
    check_file_format,
    check_sorting,
    check_unknown_label,
    run_setup,
)
from clipcls.labeling.resume import Recovered
from clipcls.labeling.sorting import SortMode, claim_sort_folder
from clipcls.labels import Label
from clipcls.output.files import FILE_FORMATS, RESUMABLE, Format, format_for
from clipcls.output.rows import clean_text
from clipcls.output.writers import make_writer
from clipcls.prompts import TemplateSet
from clipcls.settings import BackendName, ModelSettings, model_id

EXAMPLES = """
[bold]Examples[/bold]

  clipcls label ~/Pictures --labels "cat,dog,landscape,food" --output labels.csv
  clipcls label ~/Pictures --labels "cat,dog,landscape,food" --output labels.csv --resume
  clipcls label shots/ --labels-file labels.txt -o out.jsonl --threshold 0.5 --top-k 3
  clipcls label inbox/ --labels cat,dog -o sorted.csv --sort-into sorted/ --mode move
"""
RESUME_HINT = "run the same command with --resume once the problem is fixed"


def _ray_classify(
    ctx: typer.Context, settings: ModelSettings, labels: tuple[Label, ...], templates: TemplateSet
) -> tuple[Classify, str]:
    """Classification on a Ray cluster, and the model id the rows record (read without
    loading the weights on the driver)."""
    from clipcls.backends.ray_data import classify_on_ray, connect
    from clipcls.engine.sources import named_model_id, resolve_source

    check_model_name(settings)
    named = named_model_id(settings)
    if named is None:  # the default tag: ask open_clip
        source = resolve_source(settings)
        named = (source.name, source.pretrained)
    params = ctx.params
    connect(params["ray_address"])
    classify = partial(
        classify_on_ray,
        settings=settings,
        labels=labels,
        templates=templates,
        batch_size=params["batch_size"],
        actors=params["ray_actors"],
        use_cache=not params["no_cache"],
        embeddings=params["save_embeddings"],
    )
    return classify, model_id(*named)


def _count(inputs: list[str], options: LabelOptions, recovered: Recovered, hidden: bool) -> int:
    """How many files are left to label, saying which sorted folders the walk skips."""

    def skipped(folder: Path) -> None:
        notice(f"skipping {clean_text(str(folder))}: clipcls sorted files into it ({MARKER})")

    return sum(1 for _ in _pending(inputs, options, recovered, hidden, skipped))


def _pending(
    inputs: list[str],
    options: LabelOptions,
    recovered: Recovered,
    hidden: bool,
    on_skip: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """The files this run will label: the walk, less sorted folders and rows already written."""
    walk = iter_image_paths(inputs, hidden, exclude=options.sort_into, on_skip=on_skip)
    return (path for path in walk if not is_done(recovered, path, options))


def _write(
    job: LabelJob,
    out: LabelOutput,
    setup: RunSetup,
    kind: Format,
    inputs: list[str],
    total: int,
    show: bool,
    hidden: bool,
) -> None:
    """Write each row, then place its file; no stop signal ever splits the two."""
    output = out.path
    guard = InterruptGuard()
    with guard.installed():
        stream = begin(out, setup)
        try:
            writer = make_writer(kind, stream, job.columns, header=out.header)
            for problem in job.finish_pending(guard.section):
                warn(problem)
            walk = iter_image_paths(inputs, hidden, exclude=job.options.sort_into)
            for row in tracked(
                job.write_rows(writer, walk, guard.section), total, show, "labeling"
            ):
                if row.error is not None:
                    warn(row.error)
            writer.close()
            stream.close()  # a full disk can first show here
        except KeyboardInterrupt as interrupt:
            if kind not in RESUMABLE:  # Parquet: write the footer, so the rows so far are read
                writer.close()
            stream.flush()
            say_interrupted(job, output, resumable=kind in RESUMABLE)
            raise typer.Exit(exit_code_of(interrupt)) from None
        except OSError as error:
            raise ClipclsError(
                f"cannot write {clean_text(str(output))}: {error.strerror or error}; it holds "
                f"every complete row, so {RESUME_HINT}"
            ) from None
        except ClipclsError as error:  # such as the device running out of memory
            stream.flush()
            where = clean_text(str(output))
            raise type(error)(
                f"{error}; {where} holds every complete row, so {RESUME_HINT}"
            ) from error  # printed as one line; --debug shows the cause's traceback
        finally:
            with contextlib.suppress(OSError):
                stream.close()


@model_options()
@RUN.options()
@SCALE.options()
@LABELS.options()
def label(
    ctx: typer.Context,
    paths: PathsArg,
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
) -> None:
    """Label every image under the paths into a CSV, JSONL or Parquet file, one row per file."""
    run, scale = run_options(ctx), scale_options(ctx)
    quiet, include_hidden, strict = run.quiet, run.include_hidden, run.strict
    engine, server, batch_size, no_cache = (
        scale.engine,
        scale.server,
        scale.batch_size,
        scale.no_cache,
    )
    with reported_errors(run.debug):
        choice = labels_choice(ctx)
        label_list, template_set = choice.labels, choice.templates
        inputs = read_inputs(paths)
        if engine is BackendName.RAY:
            check_ray()  # before anything is locked or loaded
        kind = format_for(output, as_format(fmt), FILE_FORMATS)
        check_file_format(kind, resume, save_embeddings)
        if (dry_run or mode is not SortMode.COPY) and sort_into is None:
            raise UsageError("--mode and --dry-run need --sort-into DIR")
        unknown = check_unknown_label(unknown_label, threshold, label_list)
        options = LabelOptions(top_k, threshold, unknown, sort_into, mode, dry_run, save_embeddings)
        check_sorting(kind, options, inputs)
        settings = model_settings(ctx)
        remote = None
        if server is not None:
            if engine is BackendName.RAY:
                raise UsageError("--server and --engine ray: give one or the other")
            remote, named = server_classifier(ctx, server, label_list, template_set, quiet)
            remote.embeddings = save_embeddings
            # The weights the server reports: the client may not see its files, or see others.
            setup = replace(
                run_setup(kind, options, label_list, template_set, remote.client.weights),
                model=model_id(*named),
            )
        else:
            key = model_identity(settings).key
            setup = run_setup(kind, options, label_list, template_set, key)
        columns = options.columns(len(label_list))
        keep = mode is SortMode.MOVE or dry_run
        with contextlib.ExitStack() as held:
            out = open_label_output(output, kind, columns, setup, resume, overwrite, keep)
            held.callback(out.close)
            if sort_into is not None and not dry_run:
                held.callback(os.close, claim_sort_folder(sort_into))
            recovered = out.recovered or Recovered()
            total = _count(inputs, options, recovered, include_hidden)
            if total == 0 and out.recovered is None:
                raise UsageError(f"no images found in {', '.join(inputs)}")
            if total == 0 and (sort_into is None or dry_run):  # no model needed to say so
                notice(f"nothing left to label: {clean_text(str(output))} holds every image found")
                return
            classify: Classifier | Classify
            if remote is not None:
                classify, loaded = remote.classify_paths, model_id(*remote.client.model)
            elif engine is BackendName.RAY:
                classify, loaded = _ray_classify(ctx, settings, label_list, template_set)
            else:
                walk = partial(_pending, inputs, options, recovered, include_hidden)
                cache = open_cache(settings, no_cache)
                classifier, info = load_classifier(
                    settings, label_list, template_set, batch_size, quiet, cache, walk
                )
                classify, loaded = classifier, model_id(info.model, info.pretrained)
            check_loaded_model(out, setup, loaded)
            row_model = out.recorded.model if out.recorded is not None else loaded
            job = LabelJob(classify, options, row_model, out.recovered, len(label_list))
            if recovered.dropped_bytes:
                notice(
                    f"dropped a partial last line ({recovered.dropped_bytes} bytes) "
                    f"from {clean_text(str(output))}"
                )
            show = not quiet and stderr.is_terminal
            _write(
                job, out, replace(setup, model=row_model), kind, inputs, total, show, include_hidden
            )
        if not quiet:
            report(job.summary, output, options)
        fail_if_strict(strict, job.summary.failures)
