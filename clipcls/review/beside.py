"""Files a review keeps beside the output (its review file, the apply ledger): opened never
through a link and never waiting on a FIFO, and a new one's name made durable."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from clipcls.errors import UsageError
from clipcls.pathtext import clean_text

CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def open_beside(path: Path, flags: int) -> int:
    """A file kept beside the output (the review file, the apply ledger) opened with flags:
    never through a link (one planted there would have us write into the file it names), never
    waiting on a FIFO. UsageError for either, FileNotFoundError passed on."""
    name = clean_text(str(path))
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | CLOEXEC, 0o666)
    except FileNotFoundError:
        raise
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UsageError(f"{name} is a symbolic link: not followed (move it away)") from None
        raise UsageError(f"cannot open {name}: {error.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO opens for read and write at once
        os.close(fd)
        raise UsageError(f"{name} is not a regular file")
    return fd


def sync_folder(path: Path) -> None:
    """Make a new file's name durable too (its folder's entry)."""
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
