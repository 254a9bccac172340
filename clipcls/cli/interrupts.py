"""Ctrl-C, SIGTERM and SIGHUP: stop at once, but never inside a critical section."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

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
