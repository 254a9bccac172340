"""What `clipcls label` tells the user on stderr: the summary table, what --sort-into did, and
how to resume an interrupted run."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from rich.table import Table
from rich.text import Text

from clipcls.cli.clock import timing
from clipcls.cli.console import notice, stderr
from clipcls.labeling.job import Summary
from clipcls.labeling.options import LabelOptions
from clipcls.labeling.sorting import SortMode
from clipcls.output.rows import clean_text
from clipcls.output.writers import plural


def say_interrupted(summary: Summary, output: Path, resumable: bool) -> None:
    done = f"interrupted: {plural(summary.processed, 'image')} labeled in this run; "
    where = clean_text(str(output))
    if not resumable:
        notice(f"{done}{where} holds them; a Parquet run cannot be resumed: use --overwrite")
        return
    stderr.print(
        f"{done}{where} holds only complete rows. Resume with:",
        style="yellow",
        soft_wrap=True,
        markup=False,
    )
    stderr.print(_resume_command(), markup=False, soft_wrap=True)


def _resume_command() -> str:
    args = [a for a in sys.argv[1:] if a not in ("--overwrite", "--resume")]
    return shlex.join(["clipcls", *args, "--resume"])


PLACED = {
    SortMode.COPY: ("copied", "copy"),
    SortMode.SYMLINK: ("linked", "link"),
    SortMode.HARDLINK: ("hard-linked", "hard-link"),
    SortMode.MOVE: ("moved", "move"),
}


def report(summary: Summary, output: Path, options: LabelOptions) -> None:
    where = clean_text(str(output))
    if summary.processed == 0:
        notice(f"nothing left to label: {where} holds every image found")
        return
    notice(f"labeled into {where}:")
    table = Table(header_style="bold")
    table.add_column("label")
    table.add_column("images", justify="right")
    for label, count in summary.per_label.most_common():
        table.add_row(label, str(count))
    if summary.unlabeled:
        table.add_row(Text("no label", style="dim"), str(summary.unlabeled))
    if summary.failures:
        table.add_row(Text("unreadable", style="red"), str(summary.failures))
    stderr.print(table)
    elapsed = time.monotonic() - summary.started
    skipped = f", {summary.skipped} already done" if summary.skipped else ""
    notice(timing(summary.processed, elapsed) + skipped)
    if options.sort_into is not None:
        notice(_sorted_line(summary, options))


def _sorted_line(summary: Summary, options: LabelOptions) -> str:
    """What --sort-into did: `copied 13 files into sorted/ (cat 8, dog 5)`, and why labeled
    URLs were not sorted (there is no file here to place)."""
    done, planned = PLACED[options.mode]
    files = plural(sum(summary.placed.values()), "file")
    folder = clean_text(str(options.sort_into))
    labels = ", ".join(f"{label} {count}" for label, count in summary.placed.most_common())
    what = f"dry run: would {planned} {files}" if options.dry_run else f"{done} {files}"
    line = f"{what} into {folder}" + (f" ({labels})" if labels else "")
    if summary.unplaced:
        line += f"; {plural(summary.unplaced, 'file')} not {done}: see the warnings"
    if summary.unsorted_urls:
        urls = plural(summary.unsorted_urls, "URL")
        line += f"; {urls} not sorted: a URL is no file here to {planned}"
    return line
