"""Sort files into DIR/<label>/ folders: safe folder names, collision-free names, safe moves."""

from __future__ import annotations

import os
import re
import shutil
from enum import Enum
from pathlib import Path

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
MAX_NAME = 120


class SortMode(str, Enum):
    """How a file gets into its label folder."""

    COPY = "copy"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    MOVE = "move"


def safe_folder_name(label: str) -> str:
    """A label as a folder name that works on Linux, macOS and Windows."""
    name = UNSAFE.sub("_", label).strip(" .")[:MAX_NAME].strip(" .")
    if not name:
        return "_"
    if name.split(".")[0].lower() in WINDOWS_RESERVED:
        return f"_{name}"
    return name


def unique_destination(folder: Path, name: str, taken: set[Path] | None = None) -> Path:
    """folder/name, or folder/stem_1.ext, stem_2.ext ... if that exists (or is taken)."""
    stem, suffix = os.path.splitext(name)
    candidate, number = folder / name, 1
    while os.path.lexists(candidate) or (taken is not None and candidate in taken):
        candidate = folder / f"{stem}_{number}{suffix}"
        number += 1
    return candidate


def _copy_atomically(source: Path, destination: Path) -> None:
    """Copy under a hidden temporary name, then rename: the destination is never half-written."""
    partial = destination.with_name(f".{destination.name}.clipcls-partial")
    shutil.copy2(source, partial)
    os.replace(partial, destination)


def place(source: Path, destination: Path, mode: SortMode) -> None:
    """Put source at destination by copy, link or move; destination must not exist."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if mode is SortMode.COPY:
        _copy_atomically(source, destination)
    elif mode is SortMode.SYMLINK:
        os.symlink(os.path.abspath(source), destination)
    elif mode is SortMode.HARDLINK:
        os.link(source, destination)
    else:
        try:
            os.rename(source, destination)  # atomic on one file system
        except OSError:
            # Another file system: the file exists at the source until its full copy is in place.
            _copy_atomically(source, destination)
            os.unlink(source)


def is_placed(source: Path, destination: Path, mode: SortMode) -> bool:
    """Whether an earlier run already finished placing this file."""
    if mode is SortMode.MOVE:
        return os.path.lexists(destination) and not os.path.lexists(source)
    return os.path.lexists(destination)
