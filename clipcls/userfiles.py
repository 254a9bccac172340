"""Small files clipcls keeps for a user (the config file, the list of local-dir: folders used):
read only if regular and small, never blocking on a FIFO; written whole under a lock, by rename."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the rename still keeps files whole
    fcntl = None  # type: ignore[assignment]

READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
KINDS = {stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a device"}  # a folder fails to open as a file


class UnusableFile(ValueError):
    """A user file that is there but cannot be used as one (not regular, too large, not UTF-8)."""


def read_small_text(path: Path, limit: int) -> str | None:
    """The UTF-8 text of a regular file of at most limit bytes (links followed); None where
    nothing is there. UnusableFile or OSError (unreadable) otherwise."""
    try:
        fd = os.open(path, READ_FLAGS)  # a FIFO opens at once and is refused below
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as stream:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in KINDS.items() if test(mode)), "not a file")
            raise UnusableFile(f"is {kind}, not a regular file")
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise UnusableFile(f"is larger than {limit // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnusableFile(f"is not UTF-8 text (byte {error.start})") from None


def real_target(path: Path) -> Path:
    """Where writing path lands: a symlinked dotfile is written through, the link kept."""
    return Path(os.path.realpath(path))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside path (`.NAME.lock`) for a read-change-write; the kernel
    drops it however the process ends, so a kill -9 leaves nothing stale."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path.with_name(f".{path.name}.lock"), flags, 0o600)
    try:
        if fcntl is not None:
            with contextlib.suppress(OSError):  # a file system without locks: unguarded
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def replace_text(path: Path, text: str) -> None:
    """Write text to path whole: a temporary file beside it, synced, renamed over it."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with contextlib.suppress(OSError, AttributeError):  # keep the mode a user gave it
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
