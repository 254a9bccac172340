"""The page's view of a run's sort folder: a sorted file is shown only if it lies in a label
folder of it, opened beneath the folder held open (labeling.sortfolder), never through a link
that leads out."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from clipcls.errors import ImageError
from clipcls.filekey import FileKey
from clipcls.labeling.sortfolder import SortFolder, locate


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
