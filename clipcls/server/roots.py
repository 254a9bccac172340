"""`--allow-dir` as a boundary: the roots resolved once at start, held open as folders in the
worker, and each requested file (and each folder a search lists) opened beneath its root
without following a link out of it (openat2 RESOLVE_BENEATH on Linux 5.6+, else a walk with
O_NOFOLLOW), then read from that fd."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from clipcls.client.allowed import OUTSIDE, real_path, under
from clipcls.errors import ImageError, UsageError
from clipcls.images import scan_folder

SYS_OPENAT2 = 437  # the same on x86_64 and aarch64 (the generic syscall table)
RESOLVE_NO_MAGICLINKS, RESOLVE_BENEATH = 0x02, 0x08
FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY  # a FIFO never blocks
LIST_FLAGS = FILE_FLAGS | os.O_DIRECTORY  # a folder to list (anything else: ENOTDIR)
DIR_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass(frozen=True)
class Root:
    """A root as resolved at start: its real path, and which folder it was then."""

    path: str
    device: int
    inode: int


def resolve_roots(folders: Sequence[str]) -> tuple[Root, ...]:
    """Each folder's real path and identity, once, at start (UsageError if not a folder)."""
    roots = []
    for folder in folders:
        real = real_path(folder)
        try:
            info = os.stat(real)
        except (OSError, ValueError):
            raise UsageError(f"--allow-dir {folder} is not a folder") from None
        if not stat.S_ISDIR(info.st_mode):
            raise UsageError(f"--allow-dir {folder} is not a folder")
        roots.append(Root(real, info.st_dev, info.st_ino))
    return tuple(roots)


class OpenRoots:
    """The roots held open in the process that reads files (a root whose path was later
    replaced, by a link or another folder, still means the folder it was at start)."""

    def __init__(self, roots: Sequence[Root]) -> None:
        self.roots: list[tuple[str, int]] = []
        for root in roots:
            try:
                fd = os.open(root.path, DIR_FLAGS)
            except OSError:
                continue  # gone since start: nothing under it is served
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != (root.device, root.inode):
                os.close(fd)  # replaced since start: not the folder the operator named
                continue
            self.roots.append((root.path, fd))

    def open(self, path: str) -> BinaryIO:
        """The regular file at path, opened beneath its root; ImageError if it lies outside
        every root (or a link leads out), is missing, or is not a regular file."""
        try:
            real = real_path(path)
        except (OSError, ValueError):
            raise ImageError(f"{OUTSIDE}: {path}") from None
        for root, dirfd in self.roots:
            relative = under(real, root)
            if relative is not None:
                _not_through_a_file(path)
                try:
                    return _checked(_open_beneath(dirfd, relative or ".", FILE_FLAGS), path)
                except OSError as error:
                    raise _refusal(error, path) from None
        raise ImageError(f"{OUTSIDE}: {path}")

    def scan(self, folder: Path) -> list[tuple[str, bool]]:
        """folder's entries (an images.Scan), the folder opened beneath its root: a search's
        walk never lists a folder outside the roots, whichever link is swapped in whenever.
        OSError where it cannot: the walk yields the folder itself, which open refuses."""
        try:
            real = real_path(str(folder))
        except ValueError:
            raise OSError(errno.EINVAL, OUTSIDE) from None
        for root, dirfd in self.roots:
            relative = under(real, root)
            if relative is not None:
                fd = _open_beneath(dirfd, relative or ".", LIST_FLAGS)
                try:
                    return scan_folder(fd)
                finally:
                    os.close(fd)
        raise OSError(errno.EXDEV, OUTSIDE)


def _not_through_a_file(path: str) -> None:
    """ImageError where the kernel finds no such file: `c.png/`, `c.png/.`, `c.png/../c.png`
    (ENOTDIR), which realpath turns into c.png. Only a refusal: the open beneath decides."""
    try:
        os.stat(path)
    except NotADirectoryError:
        raise ImageError(f"file not found: {path}") from None
    except (OSError, ValueError):
        pass


def _open_beneath(dirfd: int, relative: str, flags: int) -> int:
    """relative opened with flags beneath dirfd, through no link out of it (OSError)."""
    try:
        return openat2_beneath(dirfd, relative, flags)
    except NotImplementedError:
        return _walk_beneath(dirfd, relative, flags)


def _walk_beneath(dirfd: int, relative: str, flags: int) -> int:
    """Open relative from dirfd one component at a time, never following a link (relative
    comes from a real path, so a link in it now means one was swapped in)."""
    parts = relative.split(os.sep)
    current = dirfd
    try:
        for part in parts[:-1]:
            step = os.open(part, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=current)
            if current != dirfd:
                os.close(current)
            current = step
        return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=current)
    finally:
        if current != dirfd:
            os.close(current)


def _refusal(error: OSError, path: str) -> ImageError:
    if error.errno == errno.ENOENT:
        return ImageError(f"file not found: {path}")
    if error.errno == errno.EACCES:
        return ImageError(f"permission denied: {path}")
    return ImageError(f"{OUTSIDE}: {path}")  # EXDEV, ELOOP, ENOTDIR: a link out, or swapped


def _checked(fd: int, path: str) -> BinaryIO:
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "is a folder, not an image" if stat.S_ISDIR(mode) else "not a regular file"
        raise ImageError(f"{what}: {path}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_LIBC: list[ctypes.CDLL | None] = []


def openat2_beneath(dirfd: int, relative: str, flags: int = FILE_FLAGS) -> int:
    """openat2(dirfd, relative, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS): no `..`, absolute
    link or /proc magic link leads out of dirfd. NotImplementedError where the kernel (before
    5.6), a seccomp filter or the platform lacks it."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64"):
        raise NotImplementedError
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    libc = _LIBC[0]
    assert libc is not None
    how = _OpenHow(flags, 0, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    fd = syscall(
        ctypes.c_long(SYS_OPENAT2),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(os.fsencode(relative)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        code = ctypes.get_errno()
        if code in (errno.ENOSYS, errno.EPERM):  # old kernel, or a seccomp filter
            raise NotImplementedError
        raise OSError(code, os.strerror(code))
    return int(fd)
