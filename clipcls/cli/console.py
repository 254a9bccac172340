"""stderr for people: warnings and notices, one-line errors with exit codes, progress bars."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TextIO, TypeVar

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
)
from rich.text import Text

from clipcls.classify import Advance, ShowProgress, no_progress
from clipcls.cli.interrupts import exit_code_of
from clipcls.cli.messages import error_line
from clipcls.cli.messages import notice as notice  # re-exported: the commands' one import
from clipcls.cli.messages import stderr as stderr
from clipcls.cli.messages import warn as warn
from clipcls.errors import ClipclsError, UsageError
from clipcls.output.files import check_new_output
from clipcls.output.formats import Format
from clipcls.output.rows import printable
from clipcls.output.writers import plural

T = TypeVar("T")


@contextlib.contextmanager
def reported_errors(debug: bool) -> Iterator[None]:
    """Turn clipcls errors and Ctrl-C into one red line on stderr and the right exit code."""
    try:
        yield
    except ClipclsError as error:
        if debug:
            raise
        error_line(str(error))
        raise typer.Exit(int(error.exit_status)) from None
    except KeyboardInterrupt as interrupt:
        if debug:
            raise
        stderr.print("interrupted", style="red")
        raise typer.Exit(exit_code_of(interrupt)) from None


def status(text: str) -> AbstractContextManager[Any]:
    """A spinner on stderr, its text shown literally (a model folder may be named `[/b]`)."""
    return stderr.status(Text(printable(text)))


def check_output_path(output: Path | None, overwrite: bool, option: str = "--output") -> None:
    """Fail before any model loads if the output file cannot be created, or holds something
    that only --overwrite may replace."""
    if output is not None:
        check_new_output(output, overwrite, option)


def check_terminal_output(kind: Format, output: Path | None) -> None:
    """Refuse to print a binary format (Parquet) to a terminal: it would be noise there."""
    if kind.binary and output is None and sys.stdout.isatty():
        raise UsageError(
            f"-f {kind.name} is binary, not for a terminal: give -o FILE.{kind.name}, or send "
            "stdout to a file or a pipe"
        )


def fail_if_strict(strict: bool, failures: int) -> None:
    """With --strict, unreadable images make the command exit 1 (after all output is written)."""
    if strict and failures:
        raise ClipclsError(f"{plural(failures, 'image')} could not be read (--strict)")


@contextlib.contextmanager
def open_output(output: Path | None, append: bool = False) -> Iterator[TextIO]:
    """stdout, or the output file opened for text with CSV-safe newlines.

    A write error while closing (a full disk) becomes one clear error, and never hides the
    error that is already on its way out.
    """
    if output is None:
        if sys.stdout is None:  # started with stdout closed (`>&-`)
            raise ClipclsError("stdout is closed: write to a file with -o")
        yield sys.stdout
        return
    try:
        stream = output.open("a" if append else "w", encoding="utf-8", newline="")
    except OSError as error:
        raise UsageError(f"cannot write --output {output}: {error.strerror}") from None
    try:
        yield stream
    except BaseException:
        with contextlib.suppress(OSError):
            stream.close()
        raise
    try:
        stream.close()
    except OSError as error:
        raise ClipclsError(f"cannot write {output}: {error.strerror or error}") from None


class RateColumn(ProgressColumn):
    """Images (or the task's unit) per second, as SteadyRate measures it; blank until known."""

    def render(self, task: Task) -> Text:
        rate, unit = task.fields.get("rate"), task.fields.get("unit", " img")
        return Text("" if rate is None else f"{rate:.1f}{unit}/s", style="cyan")


class EtaColumn(ProgressColumn):
    """Time left at the steady rate."""

    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        if not rate or task.total is None:
            return Text("-:--:--", style="cyan")
        left = int((task.total - task.completed) / rate)
        return Text(f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}", style="cyan")


class SteadyRate:
    """Items per second, with the clock started after the first burst of items.

    Items come in batches: the first batch arrives after start-up and then all at once, so a
    rate counted from the first item reads thousands per second. Counting from the end of the
    first burst, and only once half a second has passed, gives the steady rate. Until then (a
    small run may never get there) the rate is the items so far over the time since origin,
    the moment the run started to wait for them, when it is given.
    """

    BURST = 0.02  # seconds between items of one batch
    SETTLE = 0.5  # seconds measured before a rate is shown

    def __init__(self, origin: float | None = None) -> None:
        self.origin = origin
        self.start: tuple[float, int] | None = None  # end of the first burst
        self.previous = (-math.inf, 0)  # the last item seen
        self.rate: float | None = None

    def update(self, count: int, now: float) -> float | None:
        """The rate after count items (None while unknown); it changes as a burst begins."""
        last_time, last_count = self.previous
        if now - last_time > self.BURST:  # a new burst: the one before it is complete
            if self.start is None and last_count:
                self.start = self.previous
            elif self.start is not None and last_time - self.start[0] >= self.SETTLE:
                self.rate = (last_count - self.start[1]) / (last_time - self.start[0])
        self.previous = (now, count)
        if self.rate is None and self.origin is not None and now > self.origin:
            return count / (now - self.origin)  # a first estimate, counting start-up
        return self.rate


def progress_bar(disable: bool = False) -> Progress:
    """A stderr progress bar with count, images/s and ETA; vanishes when done."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        EtaColumn(),
        console=stderr,
        transient=True,
        disable=disable,
    )


BAR_FROM = 2000  # a counted step of more items shows a bar; a shorter one, the spinner


@contextlib.contextmanager
def counted(what: str, total: int) -> Iterator[Callable[[int], None]]:
    """A slow counted step on stderr (Hooks.progress): the spinner, or for a large count a
    bar with count, rate and ETA; yields the function told how many more are done."""
    if total <= BAR_FROM:
        with stderr.status(f"{what} ({total:,})"):
            yield lambda done: None
        return
    steady, count = SteadyRate(origin=time.monotonic()), 0
    with progress_bar() as progress:
        task = progress.add_task(what, total=total, rate=None, unit="")

        def advance(done: int) -> None:
            nonlocal count
            count += done
            progress.update(task, advance=done, rate=steady.update(count, time.monotonic()))

        yield advance


def tracked(items: Iterable[T], total: int, show: bool, description: str) -> Iterator[T]:
    """Yield items, advancing a progress bar on stderr when show is set."""
    if not show:
        yield from items
        return
    steady = SteadyRate(origin=time.monotonic())
    with progress_bar() as progress:
        task = progress.add_task(description, total=total, rate=None)
        for count, item in enumerate(items, start=1):
            yield item
            progress.update(task, advance=1, rate=steady.update(count, time.monotonic()))


def embedding_progress(quiet: bool) -> ShowProgress:
    """The images-embedding bar on stderr (cached ones count at once); none when quiet or
    stderr is not a terminal."""
    if quiet or not stderr.is_terminal:
        return no_progress

    def show(total: int) -> AbstractContextManager[Advance]:
        return counted("embedding images", total)

    return show
