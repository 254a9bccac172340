"""The embedding cache: image and text embeddings in SQLite (WAL), shared by processes, bounded.

Image rows are keyed by (model key, absolute path) and valid only while the file's size and
mtime match, so an edited file is recomputed and its row replaced. The model key covers the
weights, precision, device kind and preprocessing (see model._cache_key).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipcls.errors import ClipclsError

FILE_NAME = "embeddings.sqlite3"
DEFAULT_MAX_BYTES = 2 * 1024**3
MAX_ENV = "CLIPCLS_CACHE_MAX_GB"
SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    model TEXT NOT NULL, path BLOB NOT NULL, size INTEGER NOT NULL, mtime INTEGER NOT NULL,
    vector BLOB NOT NULL, used REAL NOT NULL, PRIMARY KEY (model, path));
CREATE TABLE IF NOT EXISTS texts (
    model TEXT NOT NULL, text TEXT NOT NULL, vector BLOB NOT NULL, used REAL NOT NULL,
    PRIMARY KEY (model, text));
CREATE INDEX IF NOT EXISTS images_used ON images (used);
CREATE INDEX IF NOT EXISTS texts_used ON texts (used);
"""
LOOKUP_CHUNK = 500  # SQLite caps the number of bound parameters per statement
# A read marks a row as used again only if its mark is older than this: eviction stays least
# recently used to the hour, and a re-run over a warm cache writes nothing (a refresh on every
# read rewrote each ~2 KB row and cost a warm re-run three times its lookups).
USED_RESOLUTION = 3600.0


@dataclass(frozen=True)
class FileKey:
    """A file as the cache knows it: where it is and which version of it."""

    path: str
    size: int
    mtime: int

    @classmethod
    def of(cls, path: str | Path) -> FileKey | None:
        """The key of an existing file, or None if it cannot be stat'ed."""
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return cls(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class CacheInfo:
    """What `clipcls cache info` reports."""

    path: Path
    bytes: int
    max_bytes: int
    images: int
    texts: int
    models: int


def max_bytes_from_env() -> int:
    """The size bound: $CLIPCLS_CACHE_MAX_GB, else 2 GiB."""
    value = os.environ.get(MAX_ENV)
    if not value:
        return DEFAULT_MAX_BYTES
    try:
        return int(float(value) * 1024**3)
    except ValueError:
        raise ClipclsError(f"${MAX_ENV} must be a number of GiB, not {value!r}") from None


class EmbeddingCache:
    """Get and put embeddings; safe for several processes through SQLite's WAL and locking."""

    def __init__(self, folder: Path, max_bytes: int | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / FILE_NAME
        self.max_bytes = max_bytes if max_bytes is not None else max_bytes_from_env()
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as error:
            raise ClipclsError(
                f"cannot use the embedding cache {self.path} ({error}); "
                "run `clipcls cache clear` or pass --no-cache"
            ) from None

    def close(self) -> None:
        self.db.close()

    def _write(self, statement: str, rows: Iterable[tuple[object, ...]]) -> None:
        with self.db:  # one short transaction; other processes wait on the lock, up to 60 s
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(statement, rows)

    def get_images(self, model: str, keys: Sequence[FileKey]) -> dict[str, np.ndarray]:
        """Cached embeddings by absolute path, for files whose size and mtime still match."""
        # Paths are stored as their file-system bytes: names need not be valid UTF-8.
        wanted = {os.fsencode(key.path): key for key in keys}
        found: dict[str, np.ndarray] = {}
        stale: list[bytes] = []
        cutoff = time.time() - USED_RESOLUTION
        paths = list(wanted)
        for start in range(0, len(paths), LOOKUP_CHUNK):
            chunk = paths[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = "SELECT path, size, mtime, vector, used FROM images WHERE model = ? AND path IN"
            rows = self.db.execute(f"{query} ({marks})", [model, *chunk])
            for path, size, mtime, vector, used in rows:
                key = wanted[path]
                if (size, mtime) == (key.size, key.mtime):
                    found[key.path] = np.frombuffer(vector, dtype=np.float32)
                    if used < cutoff:
                        stale.append(path)
        self._mark_used("images", "path", model, stale)
        return found

    def put_images(self, model: str, items: Iterable[tuple[FileKey, np.ndarray]]) -> None:
        """Store embeddings (replacing older versions of the same files), then keep the bound."""
        now = time.time()
        rows = [
            (model, os.fsencode(key.path), key.size, key.mtime, _blob(vector), now)
            for key, vector in items
        ]
        if rows:
            self._write("INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._evict()

    def get_texts(self, model: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached text embeddings by text."""
        found: dict[str, np.ndarray] = {}
        stale: list[str] = []
        cutoff = time.time() - USED_RESOLUTION
        unique = list(dict.fromkeys(texts))
        for start in range(0, len(unique), LOOKUP_CHUNK):
            chunk = unique[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT text, vector, used FROM texts WHERE model = ? AND text IN ({marks})",
                [model, *chunk],
            )
            for text, vector, used in rows:
                found[text] = np.frombuffer(vector, dtype=np.float32)
                if used < cutoff:
                    stale.append(text)
        self._mark_used("texts", "text", model, stale)
        return found

    def _mark_used(self, table: str, column: str, model: str, keys: Sequence[object]) -> None:
        if keys:
            now = time.time()
            self._write(
                f"UPDATE {table} SET used = ? WHERE model = ? AND {column} = ?",
                ((now, model, key) for key in keys),
            )

    def put_texts(self, model: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        """Store text embeddings."""
        now = time.time()
        rows = [(model, text, _blob(vector), now) for text, vector in items]
        if rows:
            self._write("INSERT OR REPLACE INTO texts VALUES (?, ?, ?, ?)", rows)
            self._evict()

    def used_bytes(self) -> int:
        """Bytes in use by the database (free pages not counted)."""
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self.db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def _evict(self) -> None:
        """Drop the least recently used tenth of the rows until under the bound."""
        while self.used_bytes() > self.max_bytes:
            count = self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            texts = self.db.execute("SELECT COUNT(*) FROM texts").fetchone()[0]
            if count + texts == 0:
                return
            table = "images" if count >= texts else "texts"
            drop = max(1, max(count, texts) // 10)
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute(
                    f"DELETE FROM {table} WHERE rowid IN "
                    f"(SELECT rowid FROM {table} ORDER BY used LIMIT ?)",
                    (drop,),
                )

    def info(self) -> CacheInfo:
        """Sizes and counts for `clipcls cache info`."""
        images = self.db.execute("SELECT COUNT(*), COUNT(DISTINCT model) FROM images").fetchone()
        texts = self.db.execute("SELECT COUNT(*) FROM texts").fetchone()[0]
        return CacheInfo(self.path, self.used_bytes(), self.max_bytes, images[0], texts, images[1])

    def clear(self) -> None:
        """Delete every embedding and give the space back."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM images")
            self.db.execute("DELETE FROM texts")
        self.db.execute("VACUUM")


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()
