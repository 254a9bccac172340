"""One writer per output: an OS lock on an open file, released by the kernel when the process
ends, however it ends, so a kill -9 never leaves a stale lock behind."""

from __future__ import annotations

import os

from clipcls.errors import UsageError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not guarded there
    fcntl = None  # type: ignore[assignment]

PROC_LOCKS = "/proc/locks"


def lock_holder(fd: int) -> int | None:
    """The pid holding a lock on fd's file, from Linux's lock table (None elsewhere)."""
    inode = os.fstat(fd).st_ino
    try:
        with open(PROC_LOCKS, encoding="ascii", errors="replace") as table:
            lines = table.readlines()
    except OSError:
        return None
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 2649 fe:00:2146467 0 EOF"; waiters are marked "->"
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and "->" not in fields:
            if fields[5].rsplit(":", 1)[-1] == str(inode) and fields[4].isdigit():
                return int(fields[4])
    return None


def lock_exclusively(fd: int, path: os.PathLike[str] | str, what: str) -> None:
    """Take the lock on fd's file or raise UsageError naming the process that holds it."""
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_holder(fd)
        by = f"pid {holder}" if holder is not None else "another process"
        raise UsageError(
            f"{path} is in use: another clipcls run ({by}) is writing {what}; "
            "wait for it to finish or stop it"
        ) from None
    except OSError:
        return  # a file system without locks (some network mounts): carry on unguarded
