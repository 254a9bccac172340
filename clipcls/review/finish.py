"""What a review ends with, from the decisions made so far: the output with the corrected
labels, the sorted files moved to their corrected folders, a support folder of the reviewed
images; each thing done said in one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from clipcls.errors import UsageError
from clipcls.output.writers import plural
from clipcls.review.export import apply_sorting, export_corrected, export_support
from clipcls.review.log import ReviewLog
from clipcls.review.table import ReviewTable


def finish_review(
    table: ReviewTable,
    target: Path | None,
    support: Path | None,
    apply: bool,
    warn: Callable[[str], None],
) -> list[str]:
    """Write what was asked (warn hears each problem on the way); the lines saying what was
    done, in order."""
    if apply and table.sort_into is None:
        raise UsageError("--apply needs an output of a --sort-into run")
    done: list[str] = []
    log = ReviewLog.read(table)  # not locked: a page may stay open on the same review
    try:
        decisions = log.current()
        if target is not None:
            count = export_corrected(table, decisions, target)
            done.append(f"wrote {plural(count, 'row')} to {target}")
        if apply:  # before the support links: they point where the files end up
            for problem in apply_sorting(table, decisions):
                warn(problem)
            done.append(f"applied {plural(len(decisions), 'decision')} to {table.sort_into}")
        if support is not None:
            problems: list[str] = []
            count = export_support(table, decisions, support, problems)
            for problem in problems:
                warn(problem)
            done.append(f"linked {plural(count, 'reviewed image')} into {support}")
    finally:
        log.close()
    return done
