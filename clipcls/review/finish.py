"""What a review ends with, from the decisions made so far: the output with the corrected
labels, the sorted files moved to their corrected folders, a support folder of the reviewed
images; each thing done said in one line, and a failure where no file could be moved. The
page's finish buttons do the same, writing beside the output under fixed names."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipcls.errors import UsageError
from clipcls.output.formats import format_of
from clipcls.output.writers import plural
from clipcls.pathtext import clean_text
from clipcls.review.export import WRITERS, export_corrected, export_support
from clipcls.review.log import Decision, ReviewLog
from clipcls.review.resort import Applied, Section, apply_sorting
from clipcls.review.table import ReviewTable


@dataclass(frozen=True)
class Finished:
    """The lines saying what was done, in order; failure: why --apply moved nothing while
    files were left to move (gone, refused, or failing), for the caller to exit non-zero."""

    lines: tuple[str, ...]
    failure: str | None = None


def finish_review(
    table: ReviewTable,
    target: Path | None,
    support: Path | None,
    apply: bool,
    warn: Callable[[str], None],
    section: Section = contextlib.nullcontext,
) -> Finished:
    """Write what was asked (warn hears each problem on the way; section holds stop signals
    around each move)."""
    if apply and table.sort_into is None:
        raise UsageError("--apply needs an output of a --sort-into run")
    done: list[str] = []
    failure = None
    log = ReviewLog.read(table)  # not locked: a page may stay open on the same review
    try:
        for note in log.notes:  # decisions dropped: their rows changed since
            warn(note)
        decisions = log.current()
        if target is not None:
            count = export_corrected(table, decisions, target)
            done.append(f"wrote {plural(count, 'row')} to {target}")
        if apply:  # before the support links: they point where the files end up
            applied = apply_sorting(table, decisions, section)
            for problem in applied.problems:
                warn(problem)
            line = applied_line(applied, table.output)
            if applied.moved or not (applied.gone or applied.refused or applied.failed):
                done.append(line)
            else:
                failure = line
        if support is not None:
            problems: list[str] = []
            count = export_support(table, decisions, support, problems)
            for problem in problems:
                warn(problem)
            done.append(f"linked {plural(count, 'reviewed image')} into {support}")
    finally:
        log.close()
    return Finished(tuple(done), failure)


def applied_line(applied: Applied, output: Path) -> str:
    """What an apply did, in numbers, and where: the sort folder the run recorded, said to be
    outside the output's folder where it is (a copied output points at the original's files)."""
    where = clean_text(str(applied.root))
    folder = os.path.realpath(output.parent)
    if os.path.commonpath([folder, str(applied.root)]) != folder:
        where += f", the run's sort folder (not in {clean_text(folder)}, the output's folder)"
    left = [(applied.gone, "gone"), (applied.refused, "refused"), (applied.failed, "failed")]
    said = ", ".join(f"{count} {what}" for count, what in left if count)
    if not applied.moved:
        if said:
            return f"no file moved in {where}: {said}"
        return f"nothing to move in {where}: every reviewed file is in its label folder"
    return f"moved {plural(applied.moved, 'file')} in {where}" + (f"; {said}" if said else "")


PAGE_ACTIONS = ("export", "support", "apply")


def page_targets(table: ReviewTable) -> dict[str, str | None]:
    """Where the page's finish actions write: beside the output, `NAME.corrected.csv` (.jsonl
    for a JSONL output) and the folder `NAME.support`; apply works in the run's sort folder
    (None: the run sorted nothing)."""
    output = Path(os.path.abspath(table.output))
    stem = output.name[: -len(output.suffix)] if output.suffix else output.name
    suffix = output.suffix if format_of(output) in WRITERS else ".csv"  # Parquet: CSV
    return {
        "export": str(output.with_name(f"{stem}.corrected{suffix}")),
        "support": str(output.with_name(f"{stem}.support")),
        "apply": None if table.sort_into is None else str(table.sort_into),
    }


def finish_on_page(
    table: ReviewTable, decisions: Mapping[int, Decision], action: str
) -> dict[str, Any]:
    """Do one finish action a page asked for (and its reviewer confirmed) with the decisions
    so far: the line saying what was done, the path written, each problem on the way, and
    `failed` where an apply was left files to move and moved none."""
    where = page_targets(table)
    problems: list[str] = []
    failed = False
    if action == "export":
        path = str(where["export"])
        count = export_corrected(table, decisions, Path(path))
        line = f"wrote {plural(count, 'row')} to {clean_text(path)}"
    elif action == "support":
        path = str(where["support"])
        if os.path.islink(path):  # its name is fixed: a link there is not ours to follow
            raise UsageError(f"{clean_text(path)} is a symbolic link: not followed (move it away)")
        count = export_support(table, decisions, Path(path), problems)
        line = f"linked {plural(count, 'reviewed image')} into {clean_text(path)}"
    elif action == "apply":
        if where["apply"] is None:
            raise UsageError("apply needs the output of a --sort-into run")
        applied = apply_sorting(table, decisions)
        problems.extend(applied.problems)
        path, line = str(applied.root), applied_line(applied, table.output)
        failed = not applied.moved and bool(applied.gone or applied.refused or applied.failed)
    else:
        raise UsageError(f"action must be one of {', '.join(PAGE_ACTIONS)}")
    return {
        "action": action,
        "path": clean_text(path),
        "line": line,
        "problems": problems,
        "failed": failed,
    }
