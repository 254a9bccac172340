"""A search's stored matrix: the image embeddings of one listing of files as a float16 file
beside the cache, memory-mapped by the next search over the same files, so that it reads no
embedding from SQLite; used only while every file's version (size, mtime, inode, ctime) holds."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipcls.backends.base import ImageStore
from clipcls.remote import is_url

STORE = "search"  # the folder under the cache's
FORMAT = 1
UNKNOWN = (-1, -1, -1, -1)  # the version of a file that cannot be stat'ed


@dataclass(frozen=True)
class Stored:
    """A listing's embeddings as stored: the readable files' rows, in listing order."""

    matrix: np.ndarray  # (n_readable, dim) float16 unit rows, memory-mapped when loaded
    failures: tuple[tuple[int, str], ...]  # (index in the listing, error), in listing order
    model: str


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
        return Stored(matrix, failures, str(meta["model"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_stored(folder: Path, found: np.ndarray, stored: Stored) -> None:
    """Store the matrix for found's versions: written aside, then renamed into place whole (a
    reader never sees half of it). A store that cannot be written is only slower next time."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    aside = Path(tempfile.mkdtemp(prefix=".new-", dir=folder.parent))
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
