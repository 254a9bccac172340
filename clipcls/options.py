"""What the CLI commands share: model options, error reporting, stderr notices, output files."""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, TextIO, TypeVar

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

from clipcls.errors import ClipclsError, ExitStatus, UsageError
from clipcls.output.files import check_writable
from clipcls.output.writers import plain_console, plural
from clipcls.settings import CACHE_ENV, DEFAULT_MODEL, Device, Precision

stderr = plain_console(stderr=True)
T = TypeVar("T")

MODEL_PANEL = "Model"
ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        rich_help_panel=MODEL_PANEL,
        help="open_clip architecture, hf-hub:ORG/REPO, or local-dir:PATH.",
    ),
]
PretrainedOpt = Annotated[
    str | None,
    typer.Option(
        "--pretrained",
        "-p",
        show_default=f"datacomp_xl_s13b_b90k for {DEFAULT_MODEL}",
        rich_help_panel=MODEL_PANEL,
        help="Pretrained tag (see `clipcls models`) or a local checkpoint FILE.",
    ),
]
DeviceOpt = Annotated[
    Device,
    typer.Option("--device", rich_help_panel=MODEL_PANEL, help="auto: cuda, then mps, then cpu."),
]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        "--precision",
        rich_help_panel=MODEL_PANEL,
        help="auto: fp16 on CUDA, bf16 on AMX/AVX512-BF16 CPUs, else fp32.",
    ),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        envvar=CACHE_ENV,
        file_okay=False,
        rich_help_panel=MODEL_PANEL,
        help="Where downloaded weights and embeddings are cached.",
        show_default="the user cache dir",
    ),
]
OfflineOpt = Annotated[
    bool,
    typer.Option("--offline", rich_help_panel=MODEL_PANEL, help="Use cached weights only."),
]
SPEED_PANEL = "Speed"
ExactDecodeOpt = Annotated[
    bool,
    typer.Option(
        "--exact-decode",
        rich_help_panel=SPEED_PANEL,
        help="Decode JPEGs at full size (slower; the default draft decode agrees to cos 0.995).",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        rich_help_panel=SPEED_PANEL,
        help="Image decode threads.",
        show_default="from the cores",
    ),
]
NoCacheOpt = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        rich_help_panel=SPEED_PANEL,
        help="Neither read nor write the embedding cache.",
    ),
]
INPUT_PANEL = "Input"
IncludeHiddenOpt = Annotated[
    bool,
    typer.Option(
        "--include-hidden",
        rich_help_panel=INPUT_PANEL,
        help="Also take hidden files and folders (names starting with a dot).",
    ),
]
MaxMegapixelsOpt = Annotated[
    float,
    typer.Option(
        "--max-megapixels",
        min=0.001,
        rich_help_panel=INPUT_PANEL,
        help="Refuse images whose declared size is larger (decompression bombs).",
    ),
]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        rich_help_panel=INPUT_PANEL,
        help="Exit 1 if any image could not be read (all results are still written).",
    ),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")]


def warn(message: str) -> None:
    """One yellow line on stderr."""
    stderr.print(Text.assemble(("warning:", "yellow"), " ", message), soft_wrap=True)


def notice(message: str) -> None:
    """One dim line on stderr."""
    stderr.print(message, style="dim", soft_wrap=True, markup=False)


@contextlib.contextmanager
def reported_errors(debug: bool) -> Iterator[None]:
    """Turn clipcls errors and Ctrl-C into one red line on stderr and the right exit code."""
    try:
        yield
    except ClipclsError as error:
        if debug:
            raise
        stderr.print("error: ", style="red", end="")
        stderr.print(str(error), soft_wrap=True, markup=False)
        raise typer.Exit(int(error.exit_status)) from None
    except KeyboardInterrupt as interrupt:
        if debug:
            raise
        stderr.print("interrupted", style="red")
        raise typer.Exit(exit_code_of(interrupt)) from None


def check_output_path(output: Path | None) -> None:
    """Fail before any model loads if the output file cannot be created."""
    if output is not None:
        check_writable(output)


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
    """Images per second, as SteadyRate measures it; blank until it knows."""

    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        return Text("" if rate is None else f"{rate:.1f} img/s", style="cyan")


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
    first burst, and only once half a second has passed, gives the rate from the first update.
    """

    BURST = 0.02  # seconds between items of one batch
    SETTLE = 0.5  # seconds measured before a rate is shown

    def __init__(self) -> None:
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


def tracked(items: Iterable[T], total: int, show: bool, description: str) -> Iterator[T]:
    """Yield items, advancing a progress bar on stderr when show is set."""
    if not show:
        yield from items
        return
    steady = SteadyRate()
    with progress_bar() as progress:
        task = progress.add_task(description, total=total, rate=None)
        for count, item in enumerate(items, start=1):
            yield item
            progress.update(task, advance=1, rate=steady.update(count, time.monotonic()))


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP: the run stops as after Ctrl-C, exiting 128 + the signal."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__()
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)


def exit_code_of(interrupt: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return (
        interrupt.exit_code if isinstance(interrupt, Interrupted) else int(ExitStatus.INTERRUPTED)
    )


STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class InterruptGuard:
    """Ctrl-C, SIGTERM and SIGHUP stop at once, except inside a critical section, where they
    wait for its end.

    A row and its file move are one critical section: an interrupt never leaves half a row in
    the output or a file moved without its row.
    """

    def __init__(self) -> None:
        self.critical = False
        self.pending: int | None = None

    def _handler(self, signum: int, frame: object) -> None:
        if self.critical:
            self.pending = signum
        else:
            raise Interrupted(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[InterruptGuard]:
        """Route the stop signals through this guard while the block runs."""
        previous = {signum: signal.signal(signum, self._handler) for signum in STOP_SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextlib.contextmanager
    def section(self) -> Iterator[None]:
        """Hold the stop signals until the block is done, then act on them."""
        self.critical = True
        try:
            yield
        finally:
            self.critical = False
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)
