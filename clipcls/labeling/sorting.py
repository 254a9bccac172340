"""Sort files into DIR/<label>/ folders: safe folder names, collision-free names, and placing
that never replaces a file already there."""

from __future__ import annotations

import errno
import filecmp
import os
import re
import shutil
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path

from clipcls.errors import UsageError
from clipcls.images import MARKER
from clipcls.labeling.lock import lock_exclusively
from clipcls.pathtext import NAME_MAX, fit_name, name_bytes
from clipcls.remote import is_url

# Characters no common file system takes in a name, and control characters.
UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
WINDOWS_RESERVED = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"com{i}" for i in range(1, 10)),
    *(f"lpt{i}" for i in range(1, 10)),
}
MAX_NAME = 120  # characters in a label folder's name
MAX_NAME_BYTES = 240  # and bytes: 120 CJK characters are 360
PARTIAL = ".clipcls-partial"
# Errors of os.link where the file system has no hard links: fall back to a checked rename.
NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}


class SortMode(str, Enum):
    """How a file gets into its label folder."""

    COPY = "copy"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    MOVE = "move"


def safe_folder_name(label: str) -> str:
    """A label as a folder name that works on Linux, macOS and Windows."""
    name = fit_name(UNSAFE.sub("_", label).strip(" .")[:MAX_NAME], "", MAX_NAME_BYTES)
    name = name.strip(" .")
    if not name:
        return "_"
    if name.split(".")[0].lower() in WINDOWS_RESERVED:
        return f"_{name}"
    return name


def unique_destination(
    folder: Path,
    name: str,
    taken: set[Path] | None = None,
    reusable: Callable[[Path], bool] | None = None,
) -> Path:
    """folder/name, or folder/stem_1.ext, stem_2.ext ... if that exists (or, made absolute, is
    in taken).

    An existing name that `reusable` accepts (it already holds this very file) is returned as
    is. Names are cut to the file system's byte limit, keeping the extension, with room left for
    the temporary name a copy is written under.
    """
    stem, suffix = os.path.splitext(name)
    if name_bytes(suffix) > 32:  # not an extension worth keeping
        stem, suffix = name, ""
    limit = NAME_MAX - name_bytes(f".{PARTIAL}")
    candidate, number = folder / fit_name(stem, suffix, limit), 1
    while (taken is not None and absolute(candidate) in taken) or os.path.lexists(candidate):
        if reusable is not None and os.path.lexists(candidate) and reusable(candidate):
            return candidate
        candidate = folder / fit_name(stem, f"_{number}{suffix}", limit)
        number += 1
    return candidate


def absolute(path: Path) -> Path:
    """The path from the root, without resolving links."""
    return Path(os.path.abspath(path))


def _publish(temporary: Path, destination: Path) -> None:
    """Give a finished file its name, failing with FileExistsError rather than replacing one."""
    try:
        os.link(temporary, destination, follow_symlinks=False)
    except OSError as error:
        if error.errno not in NO_LINKS:
            raise
        if os.path.lexists(destination):  # no hard links here: check, then rename
            raise FileExistsError(errno.EEXIST, "file exists", str(destination)) from None
        os.rename(temporary, destination)
        return
    os.unlink(temporary)


def _copy_atomically(source: Path, destination: Path) -> None:
    """Copy under a hidden temporary name, then link it in: never half-written, never replacing."""
    partial = destination.with_name(partial_name(destination.name))
    if os.path.lexists(partial):
        os.unlink(partial)  # left by a killed run
    shutil.copy2(source, partial)
    try:
        _publish(partial, destination)
    except BaseException:
        os.unlink(partial)
        raise


def partial_name(name: str) -> str:
    """The hidden name a copy is written under before it gets its real name."""
    return f".{name}{PARTIAL}"


def absolute_link_target(link: Path) -> str:
    """Where a symbolic link points, as an absolute path that works from any folder."""
    target = os.readlink(link)
    return os.path.join(os.path.realpath(link.parent), target)


def _move(source: Path, destination: Path) -> None:
    if source.is_symlink():
        # A relative link would point elsewhere from its new folder: re-create it absolute.
        os.symlink(absolute_link_target(source), destination)
        os.unlink(source)
        return
    try:
        _publish(source, destination)  # a second name, then the first removed: never clobbers
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        # Another file system: the file exists at the source until its full copy is in place.
        _copy_atomically(source, destination)
        os.unlink(source)


def place(source: Path, destination: Path, mode: SortMode) -> None:
    """Put source at destination by copy, link or move; FileExistsError if destination exists."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if mode is SortMode.COPY:
        _copy_atomically(source, destination)
    elif mode is SortMode.SYMLINK:
        os.symlink(os.path.abspath(source), destination)
    elif mode is SortMode.HARDLINK:
        os.link(source, destination)
    else:
        _move(source, destination)


def same_file(source: Path, destination: Path, by_content: bool = True) -> bool:
    """Whether destination already is source: the same inode or link target, or (by_content)
    the same bytes."""
    try:
        if source.is_symlink() or destination.is_symlink():
            return os.path.realpath(source) == os.path.realpath(destination)
        if os.path.samefile(source, destination):
            return True
        return by_content and filecmp.cmp(source, destination, shallow=False)
    except OSError:
        return False


def is_unfinished_move(source: Path, destination: Path) -> bool:
    """Whether a move was cut short with both names in place (a kill between link and unlink,
    or between a copy to another file system and the unlink)."""
    try:
        other_device = source.lstat().st_dev != destination.lstat().st_dev
    except OSError:
        return False
    return same_file(source, destination, by_content=other_device)


def nearest_existing(path: Path) -> Path:
    """The path itself if it exists, else its nearest existing parent folder."""
    path = absolute(path)
    while not os.path.exists(path) and path.parent != path:
        path = path.parent
    return path


def first_on_another_device(root: Path, inputs: Iterable[str]) -> str | None:
    """The first input on another file system than the folder root (or, before it is created,
    its nearest existing parent): no hard link can join the two. None if there is none."""
    device = nearest_existing(root).stat().st_dev
    for given in inputs:
        if not is_url(given) and os.path.exists(given) and os.stat(given).st_dev != device:
            return given
    return None


def claim_sort_folder(root: Path) -> int:
    """Create and mark the folder, and lock it for this run; keep the returned fd open."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / MARKER, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as error:
        raise UsageError(f"cannot sort into {root}: {error.strerror or error}") from None
    try:
        lock_exclusively(fd, root, "files into it")
    except BaseException:
        os.close(fd)
        raise
    return fd
