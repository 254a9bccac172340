"""A run's sort folder as the only place `review --apply` moves files and the page shows sorted
ones: a file is reached as <label folder>/<name> beneath the folder held open, each step taken
without following a link, so a path that leads out (or a link swapped in since) is refused."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from clipcls.errors import ImageError
from clipcls.filekey import FileKey
from clipcls.images import MARKER
from clipcls.labeling.sorting import NO_LINKS, SortMode, partial_name

CLOEXEC = getattr(os, "O_CLOEXEC", 0)
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | CLOEXEC  # a FIFO never blocks
NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | CLOEXEC


@dataclass(frozen=True)
class Entry:
    """A name in one of the sort folder's label folders."""

    folder: str
    name: str


class SortFolder:
    """The sort folder, open; entries are reached through its folder's descriptors only."""

    def __init__(self, root: Path | str) -> None:
        self.root = os.path.realpath(root)
        # The folder as named, not a link put in its place (OSError: ELOOP, gone, not a folder),
        # and the folder its real path names (no swap between the two looks).
        self.fd = os.open(root, FOLDER_FLAGS)
        self._folders: dict[str, int] = {}
        try:
            opened, named = os.fstat(self.fd), os.stat(self.root)
            if (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino):
                raise OSError(errno.ELOOP, "replaced while it was opened")
        except BaseException:
            os.close(self.fd)
            raise

    def close(self) -> None:
        for fd in (*self._folders.values(), self.fd):
            os.close(fd)
        self._folders.clear()

    def __enter__(self) -> SortFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def locate(self, path: str | None) -> Entry | None:
        """The entry path names in this sort folder (see locate); None for any other place."""
        return locate(self.root, path)

    def path(self, entry: Entry) -> Path:
        return Path(self.root, entry.folder, entry.name)

    def folder(self, name: str, create: bool = False) -> int:
        """A label folder, opened beneath the root (OSError for a link or a file by that name)."""
        if name not in self._folders:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=self.fd)
            self._folders[name] = os.open(name, FOLDER_FLAGS, dir_fd=self.fd)
        return self._folders[name]

    def marked(self) -> bool:
        """Whether it holds the marker a label run leaves in a folder it sorts files into."""
        try:
            found = os.stat(MARKER, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISREG(found.st_mode)

    def lstat(self, entry: Entry) -> os.stat_result | None:
        """The entry itself (a link not followed); None where there is none."""
        try:
            return os.stat(entry.name, dir_fd=self.folder(entry.folder), follow_symlinks=False)
        except OSError:
            return None

    def link_target(self, entry: Entry) -> str:
        """Where a link entry points, as an absolute path (a relative one from its folder)."""
        target = os.readlink(entry.name, dir_fd=self.folder(entry.folder))
        return os.path.join(self.root, entry.folder, target)

    def same(self, first: Entry, second: Entry) -> bool:
        """Whether two names hold one file (a move cut short between its two steps): the same
        inode, or two links to the same place."""
        one, two = self.lstat(first), self.lstat(second)
        if one is None or two is None or first == second:
            return False
        if stat.S_ISLNK(one.st_mode) and stat.S_ISLNK(two.st_mode):
            return self.link_target(first) == self.link_target(second)
        return (one.st_dev, one.st_ino) == (two.st_dev, two.st_ino)

    def open_file(self, entry: Entry) -> tuple[BinaryIO, FileKey]:
        """A regular file entry opened for reading, with the key of the file opened."""
        fd = os.open(entry.name, FILE_FLAGS, dir_fd=self.folder(entry.folder))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ImageError(f"not a regular file: {self.path(entry)}")
            key = FileKey.of_open(str(self.path(entry)), fd)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb"), key

    def move(self, source: Entry, target: Entry) -> None:
        """Give a file or link entry its new name, then remove the old one (a link is made
        again, pointing where it did); FileExistsError rather than replace anything."""
        old, new = self.folder(source.folder), self.folder(target.folder, create=True)
        mode = os.stat(source.name, dir_fd=old, follow_symlinks=False).st_mode
        if stat.S_ISLNK(mode):
            os.symlink(self.link_target(source), target.name, dir_fd=new)
        elif not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file")
        elif not self._link(old, source.name, new, target.name):
            return  # renamed: the old name is gone already
        os.unlink(source.name, dir_fd=old)

    def _link(self, old: int, name: str, new: int, target: str) -> bool:
        """A second name for the file; False where the file system has no hard links and it
        was renamed instead (checked first: a rename would replace)."""
        try:
            os.link(name, target, src_dir_fd=old, dst_dir_fd=new, follow_symlinks=False)
        except OSError as error:
            if error.errno not in NO_LINKS:
                raise
            if _exists(target, new):
                raise FileExistsError(errno.EEXIST, "file exists", target) from None
            os.rename(name, target, src_dir_fd=old, dst_dir_fd=new)
            return False
        return True

    def place(self, original: str, target: Entry, mode: SortMode) -> None:
        """Place the run's input again the run's way (copy, link) where its sorted copy or link
        was removed; the input itself is only read."""
        folder = self.folder(target.folder, create=True)
        if mode is SortMode.SYMLINK:
            os.symlink(os.path.abspath(original), target.name, dir_fd=folder)
        elif mode is SortMode.HARDLINK:
            os.link(original, target.name, dst_dir_fd=folder)
        else:
            self._copy(original, folder, target.name)

    def _copy(self, original: str, folder: int, name: str) -> None:
        """Copy under a hidden name, then link it in: never half a file, never replacing."""
        partial = partial_name(name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial, dir_fd=folder)  # left by a stopped apply
        fd = os.open(original, os.O_RDONLY | os.O_NONBLOCK | CLOEXEC)  # never waits on a FIFO
        with os.fdopen(fd, "rb") as source:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            os.set_blocking(fd, True)
            out = os.open(partial, NEW_FLAGS, stat.S_IMODE(info.st_mode), dir_fd=folder)
            with os.fdopen(out, "wb") as copy:
                shutil.copyfileobj(source, copy)
                os.utime(copy.fileno(), ns=(info.st_atime_ns, info.st_mtime_ns))
        try:
            linked = self._link(folder, partial, folder, name)
        except BaseException:
            os.unlink(partial, dir_fd=folder)
            raise
        if linked:
            os.unlink(partial, dir_fd=folder)

    def unlink(self, entry: Entry) -> None:
        os.unlink(entry.name, dir_fd=self.folder(entry.folder))


def locate(root: str, path: str | None) -> Entry | None:
    """The entry path names if its folder, links resolved, is a label folder of the sort folder
    at root (a real path); None for any other place."""
    name = os.path.basename(path or "")
    if name in ("", ".", ".."):
        return None
    parent = os.path.realpath(os.path.dirname(os.path.abspath(str(path))))
    if parent == root or os.path.dirname(parent) != root:
        return None
    return Entry(os.path.basename(parent), name)


def sorted_file(sort_into: Path | None, path: str | None) -> str | None:
    """path, if it names a file in a label folder of the sort folder (links resolved); None
    for any other place, and for a run that sorted nothing (sort_into None)."""
    if sort_into is None or locate(os.path.realpath(sort_into), path) is None:
        return None
    return path


def open_sorted(sort_into: Path, path: str) -> tuple[BinaryIO, FileKey]:
    """The regular file path names in the sort folder, opened beneath it (ImageError if it lies
    outside, OSError if it cannot be opened there)."""
    with SortFolder(sort_into) as folder:
        entry = folder.locate(path)
        info = None if entry is None else folder.lstat(entry)
        if entry is not None and info is not None and stat.S_ISLNK(info.st_mode):
            target = os.path.realpath(folder.link_target(entry))  # a symlink run's link
            if not os.path.exists(target):
                raise FileNotFoundError(errno.ENOENT, "gone", target)
            entry = folder.locate(target)  # followed only to a file of the sort folder
        if entry is None:
            raise ImageError(f"not in the sort folder: {path}")
        return folder.open_file(entry)


def _exists(name: str, folder: int) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
