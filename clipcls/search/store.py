"""A search's stored matrix: the image embeddings of one listing of files as a float16 file
beside the cache, memory-mapped by the next search over the same files, so that it reads no
embedding from SQLite (or held in memory by a server); used only while every file's version
(size, mtime, inode, ctime) holds."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipcls.backends.base import ImageStore
from clipcls.errors import UsageError
from clipcls.remote import is_url
from clipcls.settings import max_bytes_from_env

STORE = "search"  # the folder under the cache's
FORMAT = 1
KEPT = 16  # listings stored at most: the most recently used, within the cache's size bound
ABANDONED = 3600.0  # seconds after which a half-written store (its writer killed) is removed
UNKNOWN = (-1, -1, -1, -1)  # the version of a file that cannot be stat'ed
INDEX_SUFFIX = ".usearch"  # a listing's approximate index (ann.py), pruned alike in its folder
HELD = 8  # folder sets whose matrices a server holds in memory


@dataclass(frozen=True)
class Stored:
    """A listing's embeddings as stored: the readable files' rows, in listing order."""

    matrix: np.ndarray  # (n_readable, dim) float16 unit rows, memory-mapped when loaded
    failures: tuple[tuple[int, str], ...]  # (index in the listing, error), in listing order
    model: str


class HeldListings:
    """The matrices of the last few folder sets searched, held in memory by a process that
    searches again and again (the server, with or without a cache): one per set of inputs,
    each used only while the set lists the same files, every one of the same version."""

    def __init__(self, size: int = HELD) -> None:
        self.size = size
        self.held: OrderedDict[tuple[str, ...], tuple[tuple[str, ...], np.ndarray, Stored]]
        self.held = OrderedDict()

    def load(self, inputs: Sequence[str], paths: Sequence[str], found: np.ndarray) -> Stored | None:
        """The matrix held for inputs, if they list paths, each of found's version."""
        key = tuple(inputs)
        held = self.held.get(key)
        if held is None or held[0] != tuple(paths) or not np.array_equal(held[1], found):
            return None
        self.held.move_to_end(key)
        return held[2]

    def save(
        self, inputs: Sequence[str], paths: Sequence[str], found: np.ndarray, stored: Stored
    ) -> None:
        """Hold the matrix of inputs' listing (in place of any older one of theirs)."""
        key = tuple(inputs)
        self.held[key] = (tuple(paths), found, stored)
        self.held.move_to_end(key)
        while len(self.held) > self.size:
            self.held.popitem(last=False)


def versions(paths: Sequence[str]) -> np.ndarray | None:
    """Each file's version, (n, 4) int64 (size, mtime_ns, inode, ctime_ns); None where any
    input is a URL (its version takes a request: such listings are not stored)."""
    found = np.empty((len(paths), 4), dtype=np.int64)
    for row, path in enumerate(paths):
        if is_url(path):
            return None
        try:
            stat = os.stat(path)
        except OSError:
            found[row] = UNKNOWN
            continue
        found[row] = (stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)
    return found


def stored_folder(store: ImageStore, paths: Sequence[str]) -> Path:
    """Where the listing's matrix lives: named by the model's key and the listing itself."""
    digest = hashlib.sha256(f"{FORMAT}\n{store.key}".encode())
    for path in paths:  # a path never holds NUL: the listing reads back one way only
        digest.update(b"\0" + os.fsencode(os.path.abspath(path)))
    return store.folder / STORE / digest.hexdigest()


def load_stored(folder: Path, found: np.ndarray) -> Stored | None:
    """The stored matrix if it is of exactly these file versions, memory-mapped; else None
    (missing, damaged, or any file changed since: then the caller rebuilds it)."""
    try:
        keys = np.load(folder / "keys.npy")
        if keys.shape != found.shape or not np.array_equal(keys, found):
            return None
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        failures = tuple((int(index), str(error)) for index, error in meta["failures"])
        matrix = np.load(folder / "matrix.npy", mmap_mode="r")
        if matrix.dtype != np.float16 or matrix.ndim != 2:
            return None
        if matrix.shape[0] + len(failures) != len(found) or meta.get("format") != FORMAT:
            return None
        mark_used(folder)
        return Stored(matrix, failures, str(meta["model"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_stored(folder: Path, found: np.ndarray, stored: Stored) -> None:
    """Store the matrix for found's versions: written aside, then renamed into place whole (a
    reader never sees half of it). A store that cannot be written is only slower next time."""
    try:  # a search folder another user made (`sudo clipcls search`), or a file of its name
        folder.parent.mkdir(parents=True, exist_ok=True)
        aside = Path(tempfile.mkdtemp(prefix=".new-", dir=folder.parent))
    except OSError:
        return
    try:
        np.save(aside / "matrix.npy", np.ascontiguousarray(stored.matrix, dtype=np.float16))
        np.save(aside / "keys.npy", found)
        meta = {"format": FORMAT, "model": stored.model, "failures": list(stored.failures)}
        (aside / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(aside, folder)
    except OSError:
        pass  # a full disk or a read-only cache folder: the search itself has its answer
    finally:
        shutil.rmtree(aside, ignore_errors=True)
    prune_beside(folder.parent)


def prune_beside(parent: Path) -> None:
    """Prune parent's listings (or indexes) within the cache's size bound."""
    try:
        budget = max_bytes_from_env()
    except UsageError:
        return  # said where the cache opened; no store is pruned on a guess
    prune_stored(parent, budget)


def prune_stored(parent: Path, budget: int, now: float | None = None) -> None:
    """Keep the KEPT most recently used listings (matrix folders, or index files: ann.py)
    that fit in budget bytes (the newest always), and remove what a killed writer left: a
    library that grows by a photo a day is a new listing each search, and the old ones would
    otherwise stay forever."""
    now = time.time() if now is None else now
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    listings = []
    for entry in entries:
        try:
            if entry.name.startswith(".new-"):
                if now - entry.stat(follow_symlinks=False).st_mtime > ABANDONED:
                    _remove(entry)
            elif _is_listing(entry):
                listings.append((entry.stat().st_mtime, _size(entry), entry))
        except OSError:
            continue  # removed meanwhile by another search's pruning
    listings.sort(key=lambda listing: listing[:2], reverse=True)  # most recently used first
    total = 0
    for rank, (_, size, entry) in enumerate(listings):
        total += size
        if rank and (rank >= KEPT or total > budget):
            _remove(entry)


def _is_listing(entry: os.DirEntry[str]) -> bool:
    """A listing's matrix folder, or its index file: never a link (its target is not ours)."""
    if entry.name.endswith(INDEX_SUFFIX):
        return entry.is_file(follow_symlinks=False)
    return len(entry.name) == 64 and entry.is_dir(follow_symlinks=False)


def _size(entry: os.DirEntry[str]) -> int:
    if not entry.is_dir(follow_symlinks=False):
        return entry.stat(follow_symlinks=False).st_size
    return sum(inner.stat().st_size for inner in os.scandir(entry.path) if inner.is_file())


def _remove(entry: os.DirEntry[str]) -> None:
    """Remove a listing, or what a killed writer left; a link goes itself, never its target."""
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(entry.path)


def mark_used(path: Path) -> None:
    """Mark a listing (or index) used now: pruning keeps the most recently used."""
    try:
        os.utime(path)
    except OSError:
        pass  # a read-only cache: pruning then goes by when each was written
