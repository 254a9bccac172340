"""Opening a file for reading only if it is a regular one: non-blocking (a FIFO would wait for a
writer) and checked on the open descriptor, so a swap after a check by path changes nothing."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO


class NotRegular(OSError):
    """What the path opened to is a folder, a FIFO, a device or a socket."""

    def __init__(self, path: str | Path, folder: bool) -> None:
        why = "is a folder" if folder else "not a regular file"
        super().__init__(errno.EISDIR if folder else errno.EINVAL, why, str(path))
        self.folder = folder


def open_regular(path: str | Path) -> BinaryIO:
    """path opened for reading (binary); NotRegular unless it is a regular file (links
    followed), any other OSError as os.open raises it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegular(path, stat.S_ISDIR(mode))
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")
