"""Ctrl-C, SIGTERM and SIGHUP: stop at once, but never inside a critical section; and once a
run is stopping, a second one never breaks the way out with a traceback."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType

from clipcls.errors import ExitStatus


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


class _Process:
    """Whether this process is on its way out: an interrupt was raised, or the command ended."""

    stopping = False


def _leave(signum: int) -> None:
    """End the process now, quietly, with 128 + the signal's number (its rows are on disk:
    every row is flushed as it is written, and a kill -9 is no worse)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a write the signal cut short cannot be finished
            if stream is not None:
                stream.flush()
    os._exit(128 + signum)


def _process_ctrl_c(signum: int, frame: FrameType | None) -> None:
    if _Process.stopping:
        _leave(signum)  # a second Ctrl-C: not a KeyboardInterrupt inside the way out
    _Process.stopping = True
    raise KeyboardInterrupt


def stop_politely() -> None:
    """The process's Ctrl-C (main() only, never in-process): the first raises
    KeyboardInterrupt, so the run unwinds and says what it kept; another one while it unwinds,
    or once the command is done (torch's exit handlers), ends the process at once, quietly."""
    with contextlib.suppress(ValueError):  # not the main thread: Python's own stays
        signal.signal(signal.SIGINT, _process_ctrl_c)


def exiting() -> None:
    """The command is done: from here a stop signal ends the process at once, quietly."""
    _Process.stopping = True
    with contextlib.suppress(ValueError):
        if signal.getsignal(signal.SIGINT) is _process_ctrl_c:
            for signum in STOP_SIGNALS:
                signal.signal(signum, _process_ctrl_c)


class InterruptGuard:
    """Ctrl-C, SIGTERM and SIGHUP stop at once, except inside a critical section, where they
    wait for its end.

    A row and its file move are one critical section: an interrupt never leaves half a row in
    the output or a file moved without its row. After the first stop, later signals wait
    too: the way out (the rows kept, how to resume) is never broken by an impatient second.
    """

    def __init__(self) -> None:
        self.critical = False
        self.stopped = False  # an Interrupted was raised: later signals wait
        self.pending: int | None = None

    def _handler(self, signum: int, frame: object) -> None:
        if self.critical or self.stopped:
            self.pending = signum  # after the first stop: the way out is finished unbroken
        else:
            self._stop(signum)

    def _stop(self, signum: int) -> None:
        self.stopped = _Process.stopping = True
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
        if self.pending is not None and not self.stopped:
            signum, self.pending = self.pending, None
            self._stop(signum)
