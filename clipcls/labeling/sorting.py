"""Sort files into DIR/<label>/ folders: safe folder names, collision-free names, and which name
already holds a file's placing (placing itself is sortfolder's, through the open folder)."""

from __future__ import annotations

import errno
import filecmp
import os
import re
import stat
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path

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


def partial_name(name: str) -> str:
    """The hidden name a copy is written under before it gets its real name."""
    return f".{name}{PARTIAL}"


def is_placing(
    mode: SortMode,
    source: os.stat_result,
    found: os.stat_result,
    same_target: Callable[[], bool],
    same_bytes: Callable[[], bool],
) -> bool:
    """Whether found, a name in the sort folder (its own stat), already holds source placed by
    mode (source's stat: for a move the name itself, else the file it leads to).

    A move cut short between its two steps left the same file under both names, or a link made
    again pointing where the moved one did (same_target), or, across file systems, a regular
    file with its bytes; a copy or hard link is a regular file with its bytes (a link is no
    copy: the file would go with its source); a symlink is a link to the file (same_target).
    """
    if stat.S_ISLNK(found.st_mode):
        moved_link = mode is SortMode.MOVE and stat.S_ISLNK(source.st_mode)
        return (moved_link or mode is SortMode.SYMLINK) and same_target()
    if not (stat.S_ISREG(found.st_mode) and stat.S_ISREG(source.st_mode)):
        return False
    if (found.st_dev, found.st_ino) == (source.st_dev, source.st_ino):
        return True
    if mode is SortMode.MOVE and found.st_dev == source.st_dev:
        return False  # a move within one file system keeps the file: another one is a newcomer
    return same_bytes()


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
