"""A sort folder held open: the one way a file enters it (label, dedupe) or moves within it
(review --apply). Each name is reached as <label folder>/<name> beneath the open folder, every
step taken without following a link, so a link put in a folder's place never redirects a file."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from clipcls.errors import ImageError, UsageError
from clipcls.filekey import FileKey
from clipcls.images import MARKER
from clipcls.labeling.lock import lock_exclusively
from clipcls.labeling.sorting import NO_LINKS, SortMode, is_placing, partial_name

CLOEXEC = getattr(os, "O_CLOEXEC", 0)
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | CLOEXEC  # a FIFO never blocks
NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | CLOEXEC


class Refused(OSError):
    """A place refused: a label folder that is a link or no folder, outside, or a name taken."""


@dataclass(frozen=True)
class Entry:
    """A name in one of the sort folder's label folders ("." for the folder itself)."""

    folder: str
    name: str


class SortFolder:
    """The sort folder, open; entries are reached through its folder's descriptors only."""

    def __init__(self, root: Path | str) -> None:
        self.root = os.path.realpath(root)
        # The folder as named, not a link in its place (ELOOP), and the one its real path names.
        self.fd = os.open(root, FOLDER_FLAGS)
        self._lock: int | None = None
        try:
            opened, named = os.fstat(self.fd), os.stat(self.root)
            if (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino):
                raise OSError(errno.ELOOP, "replaced while it was opened")
        except BaseException:
            os.close(self.fd)
            raise

    def close(self) -> None:
        for fd in (self.fd, *(() if self._lock is None else [self._lock])):
            os.close(fd)

    def __enter__(self) -> SortFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def claim(self) -> None:
        """Mark the folder (walks skip it) and lock it until close(); UsageError if taken."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | CLOEXEC
        fd = os.open(MARKER, flags, 0o666, dir_fd=self.fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, f"{MARKER} is not a regular file")
            lock_exclusively(fd, self.root, "files into it")
        except BaseException:
            os.close(fd)
            raise
        self._lock = fd

    def locate(self, path: str | None) -> Entry | None:
        """The entry path names in this sort folder (see locate); None for any other place."""
        return locate(self.root, path)

    def path(self, entry: Entry) -> Path:
        return Path(self.root, entry.folder, entry.name)

    @contextlib.contextmanager
    def folder(self, name: str, create: bool = False) -> Iterator[int]:
        """A label folder opened beneath the root for one step (never kept); Refused for a link."""
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o777, dir_fd=self.fd)
        try:
            fd = os.open(name, FOLDER_FLAGS, dir_fd=self.fd)
        except OSError as error:
            gone = create and error.errno == errno.ENOENT  # made, and removed at once
            if not gone and error.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            why = "went away as it was made" if gone else "is a link or no folder: not followed"
            raise Refused(error.errno, f"{name} {why}") from None
        try:
            yield fd
        finally:
            os.close(fd)

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
            with self.folder(entry.folder) as folder:
                return os.stat(entry.name, dir_fd=folder, follow_symlinks=False)
        except OSError:
            return None

    def link_target(self, entry: Entry) -> str:
        """Where a link entry points, as an absolute path (a relative one from its folder)."""
        with self.folder(entry.folder) as folder:
            target = os.readlink(entry.name, dir_fd=folder)
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
        with self.folder(entry.folder) as folder:
            fd = os.open(entry.name, FILE_FLAGS, dir_fd=folder)
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
        with self.folder(source.folder) as old, self.folder(target.folder, True) as new:
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
            with contextlib.suppress(FileNotFoundError):  # a name there, a link or not
                os.stat(target, dir_fd=new, follow_symlinks=False)
                raise FileExistsError(errno.EEXIST, "file exists", target) from None
            os.rename(name, target, src_dir_fd=old, dst_dir_fd=new)
            return False
        return True

    def put(self, source: str, target: Entry, mode: SortMode, finishing: bool = False) -> None:
        """Place source (outside) at target unless it holds its placing (a move cut short there
        is finished); Refused for another file's name, but a resumed move's (placed before)."""
        if self.lstat(target) is None:
            self.place(source, target, mode)
        elif self.holds(source, target, mode):
            if mode is SortMode.MOVE:
                with _parent(source) as (parent, name):
                    os.unlink(name, dir_fd=parent)
        elif not (mode is SortMode.MOVE and (finishing or not os.path.lexists(source))):
            raise Refused(errno.EEXIST, "another file has this name: nothing is replaced")

    def holds(self, source: str, target: Entry, mode: SortMode) -> bool:
        """Whether target already is source placed the run's way (see sorting.is_placing)."""
        found = self.lstat(target)
        try:
            given = os.lstat(source) if mode is SortMode.MOVE else os.stat(source)
        except OSError:
            return False

        def same_target() -> bool:
            placed = self.link_target(target)
            if mode is SortMode.MOVE:  # a moved link is made again, pointing where it did
                return placed == _link_target(source)
            return os.path.realpath(placed) == os.path.realpath(source)

        same_bytes = partial(self._same_bytes, source, target)
        return found is not None and is_placing(mode, given, found, same_target, same_bytes)

    def _same_bytes(self, source: str, target: Entry) -> bool:
        try:
            placed, _ = self.open_file(target)
            with placed, open(source, "rb") as original:
                while (chunk := original.read(1 << 20)) == placed.read(1 << 20):
                    if not chunk:
                        return True
                return False
        except (OSError, ImageError):  # swapped since it was looked at: not this file's
            return False

    def place(self, original: str, target: Entry, mode: SortMode) -> None:
        """Put original (outside) at target by mode; FileExistsError rather than replace."""
        with self.folder(target.folder, create=True) as folder:
            if mode is SortMode.SYMLINK:
                os.symlink(os.path.abspath(original), target.name, dir_fd=folder)
            elif mode is SortMode.HARDLINK:
                os.link(original, target.name, dst_dir_fd=folder)
            elif mode is SortMode.COPY:
                fd = os.open(original, os.O_RDONLY | os.O_NONBLOCK | CLOEXEC)  # a FIFO: no wait
                with contextlib.closing(open(fd, "rb")) as source:
                    self._copy(source, folder, target.name)
            else:
                self._take(original, folder, target.name)

    def _take(self, original: str, folder: int, name: str) -> None:
        """Move a file in: a second name, then the first removed through the folder holding
        it (across file systems: a full copy first); a link is made again, absolute."""
        with _parent(original) as (parent, base):
            kind = os.stat(base, dir_fd=parent, follow_symlinks=False).st_mode
            if stat.S_ISLNK(kind):
                os.symlink(_link_target(original), name, dir_fd=folder)
            elif not stat.S_ISREG(kind):
                raise OSError(errno.EINVAL, "not a regular file")
            else:
                try:
                    if not self._link(parent, base, folder, name):
                        return  # renamed: the old name is gone already
                except OSError as error:
                    if error.errno != errno.EXDEV:
                        raise
                    fd = os.open(base, FILE_FLAGS, dir_fd=parent)
                    with contextlib.closing(open(fd, "rb")) as source:
                        self._copy(source, folder, name)
            os.unlink(base, dir_fd=parent)

    def _copy(self, source: BinaryIO, folder: int, name: str) -> None:
        """Copy under a hidden name, then link it in: never half a file, never replacing."""
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(source.fileno(), True)
        partial = partial_name(name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial, dir_fd=folder)  # left by a stopped run
        out = os.open(partial, NEW_FLAGS, 0o600, dir_fd=folder)
        with os.fdopen(out, "wb") as copy:
            shutil.copyfileobj(source, copy)
            copy.flush()  # before the times are set: a later write would change them
            os.fchmod(out, stat.S_IMODE(info.st_mode))  # as shutil.copy2 keeps them
            os.utime(out, ns=(info.st_atime_ns, info.st_mtime_ns))
        try:
            linked = self._link(folder, partial, folder, name)
        except BaseException:
            os.unlink(partial, dir_fd=folder)
            raise
        if linked:
            os.unlink(partial, dir_fd=folder)

    def unlink(self, entry: Entry) -> None:
        with self.folder(entry.folder) as folder:
            os.unlink(entry.name, dir_fd=folder)


def claim_sort_folder(root: Path) -> SortFolder:
    """Create the folder (a link given as root is followed once, here), open, mark and lock
    it for this run; close the returned folder when done."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        folder = SortFolder(os.path.realpath(root))
        try:
            folder.claim()
        except BaseException:
            folder.close()
            raise
    except OSError as error:
        raise UsageError(f"cannot sort into {root}: {error.strerror or error}") from None
    return folder


def locate(root: str, path: str | None) -> Entry | None:
    """The entry path names if its folder, links resolved, is a label folder of the sort folder
    at root (a real path); None for any other place."""
    name = os.path.basename(path or "")
    with contextlib.suppress(OSError):  # a link swapped while it was resolved: nowhere
        parent = os.path.realpath(os.path.dirname(os.path.abspath(str(path))))
        if name not in ("", ".", "..") and parent != root and os.path.dirname(parent) == root:
            return Entry(os.path.basename(parent), name)
    return None


@contextlib.contextmanager
def existing_sort_folder(root: Path) -> Iterator[SortFolder | None]:
    """The folder open to look at its names, where it is one (nothing created or locked)."""
    try:
        folder = SortFolder(os.path.realpath(root))
    except OSError:
        yield None
        return
    with folder:
        yield folder


@contextlib.contextmanager
def _parent(path: str) -> Iterator[tuple[int, str]]:
    """The folder holding path, open (its own links followed once), and path's name in it."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY | CLOEXEC)
    try:
        yield fd, os.path.basename(path)
    finally:
        os.close(fd)


def _link_target(path: str) -> str:
    """Where a link outside the folder points, absolute (from the link's real folder)."""
    with contextlib.suppress(OSError):
        return os.path.join(os.path.realpath(os.path.dirname(path)), os.readlink(path))
    return ""
