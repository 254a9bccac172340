"""`clipcls dedupe`: groups of near-duplicate images, one kept per group by a stated rule, the
others listed and, with --sort-into, copied (or moved, or linked) out under `label`'s rules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clipcls.cli.backend_options import chosen_inputs, explicit, open_chosen_backend
from clipcls.cli.console import (
    check_output_path,
    embedding_progress,
    fail_if_strict,
    notice,
    open_output,
    reported_errors,
    warn,
)
from clipcls.cli.formats import SearchFormatOpt, as_format
from clipcls.cli.interrupts import InterruptGuard, exit_code_of
from clipcls.cli.model_options import model_options
from clipcls.cli.option_groups import RUN, run_options, scale_options
from clipcls.cli.options import SORT_PANEL, DryRunOpt, OverwriteOpt, PathsArg, SortModeOpt
from clipcls.cli.search_options import DEDUPE_SCALE, OutputOpt
from clipcls.errors import UsageError
from clipcls.labeling.sorting import SortMode
from clipcls.output.formats import RESULT_FORMATS, Format, format_for
from clipcls.search.dedupe import DEFAULT_THRESHOLD, Deduplication, KeepRule, check_threshold
from clipcls.search.dedupe import dedupe as find_duplicates
from clipcls.search.dedupe_sort import (
    Placement,
    check_sort_target,
    plan_placements,
    result_rows,
    sort_out,
    summary,
)

EXAMPLES = """
[bold]Examples[/bold]

  clipcls dedupe ~/Pictures
  clipcls dedupe shots/ --threshold 0.97 --keep oldest -f csv -o dupes.csv
  clipcls dedupe inbox/ --sort-into dupes/ --dry-run
  clipcls dedupe inbox/ archive/ --sort-into dupes/ --mode move
  clipcls dedupe bursts/ --threshold 0.95
"""


ThresholdOpt = Annotated[
    float,
    typer.Option(
        "--threshold",
        help="Cosine in (0, 1] to the kept image at or above which an image is its near "
        "duplicate: 0.985 is the same photo re-encoded or resized; 0.95 also takes bursts and "
        "near-shots.",
    ),
]
KeepOpt = Annotated[
    KeepRule,
    typer.Option(
        "--keep",
        help="Which image is kept, with its near duplicates: most pixels (then larger file, "
        "then path), earliest modified, or first in walk order.",
    ),
]
SortIntoOpt = Annotated[
    Path | None,
    typer.Option(
        "--sort-into",
        file_okay=False,
        rich_help_panel=SORT_PANEL,
        help="Copy (or, by --mode, move or link) the images not kept into DIR/ (flat; a taken "
        "name gets _1, _2, ...).",
    ),
]


def _write(
    found: Deduplication,
    placements: list[Placement],
    fmt: Format,
    output: Path | None,
    sorting: bool,
) -> None:
    """The rows, one per image of each group; with --sort-into, where each goes."""
    columns, rows = result_rows(found, placements, sorting)
    with open_output(output) as stream:
        fmt.write_records(stream, columns, rows, str(output or "stdout"))


def _sort_out(
    found: Deduplication, root: Path, mode: SortMode, fmt: Format, output: Path | None
) -> list[Placement]:
    """Place the files not kept; stopped between two (Ctrl-C, SIGTERM), write the rows with
    the places so far, say so, and exit 130 or 143: a rerun places the rest."""
    guard, done = InterruptGuard(), list[Placement]()
    with guard.installed():
        try:
            return sort_out(found.groups, root, mode, output, guard.section, done)
        except KeyboardInterrupt as stop:
            _write(found, done, fmt, output, True)
            notice(f"interrupted: {summary(found, len(done), root, mode, False)}; run it again")
            raise typer.Exit(exit_code_of(stop)) from None


@model_options()
@RUN.options()
@DEDUPE_SCALE
def dedupe(
    ctx: typer.Context,
    paths: PathsArg = None,
    threshold: ThresholdOpt = DEFAULT_THRESHOLD,
    keep: KeepOpt = KeepRule.LARGEST,
    sort_into: SortIntoOpt = None,
    mode: SortModeOpt = SortMode.COPY,
    dry_run: DryRunOpt = False,
    fmt: SearchFormatOpt = None,
    output: OutputOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Find groups of near-duplicate images; keep one of each; list the others, or copy them."""
    run, scale = run_options(ctx), scale_options(ctx)
    with reported_errors(run.debug):
        check_threshold(threshold)
        check_output_path(output, overwrite)
        chosen = format_for(output, as_format(fmt), RESULT_FORMATS)
        if explicit(ctx, "mode") and sort_into is None:
            raise UsageError("--mode needs --sort-into DIR")
        inputs, saved = chosen_inputs(ctx, scale, run.quiet, paths)
        if sort_into is not None:
            check_sort_target(sort_into, mode, inputs)
        backend = saved or open_chosen_backend(ctx, scale, run.quiet)
        found = find_duplicates(
            backend,
            inputs,
            threshold,
            keep,
            run.include_hidden,
            embedding_progress(run.quiet),
            sort_into,
        )
        for _, error in found.failures:
            warn(error)  # it names the file
        placements: list[Placement] = []
        if sort_into is not None and dry_run:
            placements = plan_placements(found.groups, sort_into, mode, output)
        elif sort_into is not None:
            placements = _sort_out(found, sort_into, mode, chosen, output)
        _write(found, placements, chosen, output, sort_into is not None)
        if not run.quiet:
            notice(summary(found, len(placements), sort_into, mode, dry_run))
        fail_if_strict(run.strict, len(found.failures))
