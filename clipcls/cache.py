"""The embedding cache: image and text embeddings in SQLite (WAL), shared by processes, bounded.

Image rows are keyed by (model key, absolute path) and valid only while the file's size, mtime,
inode and ctime all match: an edited file is recomputed even when its size and mtime were put
back (`touch -r`), since the kernel sets ctime on every change. The model key covers the
weights, precision, device kind and preprocessing (see engine.sources.cache_key).

The cache only ever speeds a run up: any failure (a lock held elsewhere, a corrupt or foreign
file, a bad row) turns it off for the rest of the run, with one message to on_failure.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from clipcls.errors import UsageError
from clipcls.filekey import FileKey
from clipcls.settings import MAX_ENV as MAX_ENV  # re-exported: where people look for it
from clipcls.settings import NOT_YOURS, max_bytes_from_env, writable
from clipcls.vectors import check_embedding

FILE_NAME = "embeddings.sqlite3"
SCHEMA_VERSION = 2  # PRAGMA user_version; a file with another version is rebuilt
RECORDS = "CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    model TEXT NOT NULL, path BLOB NOT NULL, size INTEGER NOT NULL, mtime INTEGER NOT NULL,
    inode INTEGER NOT NULL, ctime INTEGER NOT NULL,
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
BUSY_TIMEOUT = 5.0  # seconds to wait for another process's write; longer means give up
T = TypeVar("T")


@dataclass(frozen=True)
class CacheInfo:
    """What `clipcls cache info` reports."""

    path: Path
    bytes: int
    max_bytes: int
    images: int
    texts: int
    models: int


def guarded(default: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Make a cache method return default, and turn the cache off, when anything fails."""

    def decorate(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def run(self: EmbeddingCache, *args: Any, **kwargs: Any) -> T:
            if self.db is None:
                return default() if callable(default) else default  # type: ignore[no-any-return]
            try:
                return method(self, *args, **kwargs)
            except (sqlite3.Error, ValueError, TypeError, OSError, MemoryError) as error:
                self.fail(error)
                return default() if callable(default) else default  # type: ignore[no-any-return]

        return run

    return decorate


class EmbeddingCache:
    """Get and put embeddings; safe for several processes through SQLite's WAL and locking.
    One object serves one thread at a time (it holds one connection)."""

    def __init__(
        self,
        folder: Path,
        max_bytes: int | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.path = folder / FILE_NAME
        self.max_bytes = max_bytes if max_bytes is not None else max_bytes_from_env()
        self.on_failure = on_failure
        self.failure: str | None = None
        self.reason = self.remedy = ""
        self.db: sqlite3.Connection | None = None
        self._dims: dict[str, int] = {}  # floats per vector, per model key
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # One user at a time, but not always one thread: a Ray actor is built in one thread
            # and called in another.
            self.db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._check_schema()
        except (sqlite3.Error, OSError) as error:
            self.fail(error)

    def _check_schema(self) -> None:
        assert self.db is not None
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            with self.db:  # an older or foreign layout: start again
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("DROP TABLE IF EXISTS images")
                self.db.execute("DROP TABLE IF EXISTS texts")
            self.db.executescript(SCHEMA)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.db.execute(RECORDS)  # a no-op unless the cache was written before records existed

    def fail(self, error: BaseException) -> None:
        """Turn the cache off for the rest of the run, saying why once, and what to do."""
        self.reason = f"{error or type(error).__name__}"
        self.remedy = "`clipcls cache clear` resets it" if writable(self.path) else NOT_YOURS
        self.failure = f"the embedding cache {self.path} is not usable ({self.reason}); "
        self.failure += f"going on without it ({self.remedy})"
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            self.db = None
        if self.on_failure is not None:
            self.on_failure(self.failure)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()

    def _write(self, statement: str, rows: Iterable[tuple[object, ...]]) -> None:
        assert self.db is not None
        with self.db:  # one short transaction; other processes wait on the lock, up to 60 s
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(statement, rows)

    @guarded(dict)
    def get_images(self, model: str, keys: Sequence[FileKey]) -> dict[str, np.ndarray]:
        """Cached embeddings by absolute path, for files whose version still matches."""
        assert self.db is not None
        # Paths are stored as their file-system bytes: names need not be valid UTF-8.
        wanted = {os.fsencode(key.path): key for key in keys}
        found: dict[str, np.ndarray] = {}
        stale: list[bytes] = []
        cutoff = time.time() - USED_RESOLUTION
        paths = list(wanted)
        for start in range(0, len(paths), LOOKUP_CHUNK):
            chunk = paths[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = "SELECT path, size, mtime, inode, ctime, vector, used FROM images"
            rows = self.db.execute(
                f"{query} WHERE model = ? AND path IN ({marks})", [model, *chunk]
            )
            for path, size, mtime, inode, ctime, vector, used in rows:
                key = wanted[path]
                if (size, mtime, inode, ctime) == key.version:
                    found[key.path] = _vector(vector)
                    if used < cutoff:
                        stale.append(path)
        self._mark_used("images", "path", model, stale)
        return self._same_size(model, found)

    def _same_size(self, model: str, found: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Drop vectors of the wrong length (a damaged row): they are computed again."""
        lengths = Counter(len(vector) for vector in found.values())
        if not lengths:
            return found
        length = self._dims.get(model) or lengths.most_common(1)[0][0]
        return {path: vector for path, vector in found.items() if len(vector) == length}

    @guarded(None)
    def put_images(self, model: str, items: Iterable[tuple[FileKey, np.ndarray]]) -> None:
        """Store embeddings (replacing older versions of the same files), then keep the bound."""
        now = time.time()
        rows = [
            (model, os.fsencode(key.path), *key.version, _blob(vector), now)
            for key, vector in items
        ]
        if rows:
            self._dims[model] = len(rows[0][-2]) // 4
            self._write("INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._evict()

    @guarded(None)
    def get_record(self, key: str) -> str | None:
        """A small text stored under key (such as what a run learned of a model), or None."""
        assert self.db is not None
        row = self.db.execute("SELECT value FROM records WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @guarded(None)
    def put_record(self, key: str, value: str) -> None:
        """Store a small text under key, replacing what was there."""
        self._write("INSERT OR REPLACE INTO records VALUES (?, ?)", [(key, value)])

    @guarded(dict)
    def get_texts(self, model: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached text embeddings by text."""
        assert self.db is not None
        found: dict[str, np.ndarray] = {}
        stale: list[str] = []
        cutoff = time.time() - USED_RESOLUTION
        # Texts are stored as bytes: a class name from a folder need not be valid UTF-8.
        wanted = {_text_key(text): text for text in texts}
        unique = list(wanted)
        for start in range(0, len(unique), LOOKUP_CHUNK):
            chunk = unique[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT text, vector, used FROM texts WHERE model = ? AND text IN ({marks})",
                [model, *chunk],
            )
            for key, vector, used in rows:
                found[wanted[key]] = _vector(vector)
                if used < cutoff:
                    stale.append(key)
        self._mark_used("texts", "text", model, stale)
        lengths = Counter(len(vector) for vector in found.values())
        if len(lengths) > 1:
            raise ValueError("text embeddings of different lengths")
        return found

    def _mark_used(self, table: str, column: str, model: str, keys: Sequence[object]) -> None:
        if keys:
            now = time.time()
            self._write(
                f"UPDATE {table} SET used = ? WHERE model = ? AND {column} = ?",
                ((now, model, key) for key in keys),
            )

    @guarded(None)
    def put_texts(self, model: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        """Store text embeddings."""
        now = time.time()
        rows = [(model, _text_key(text), _blob(vector), now) for text, vector in items]
        if rows:
            self._write("INSERT OR REPLACE INTO texts VALUES (?, ?, ?, ?)", rows)
            self._evict()

    def used_bytes(self) -> int:
        """Bytes in use by the database (free pages not counted)."""
        assert self.db is not None
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self.db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def _evict(self) -> None:
        """Drop the least recently used tenth of the rows until under the bound."""
        assert self.db is not None
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
        """Sizes and counts for `clipcls cache info` (UsageError if the file is not usable)."""
        if self.db is None:
            raise UsageError(f"cannot open {self.path} ({self.reason}); {self.remedy}")
        images = self.db.execute("SELECT COUNT(*), COUNT(DISTINCT model) FROM images").fetchone()
        texts = self.db.execute("SELECT COUNT(*) FROM texts").fetchone()[0]
        return CacheInfo(self.path, self.used_bytes(), self.max_bytes, images[0], texts, images[1])


def clear_cache(folder: Path) -> int:
    """Delete the cache files, whatever they hold; the number of bytes freed. UsageError,
    before anything is removed, where this user may not remove them (another user's folder)."""
    stored = folder / "search"  # searches' stored matrices (clipcls.search.store): derived
    found = [stored, *stored.rglob("*")] if stored.is_dir() else []
    folders = {path for path in found if path.is_dir() and not path.is_symlink()}
    files = [folder / f"{FILE_NAME}{suffix}" for suffix in ("", "-wal", "-shm", "-journal")]
    files = [path for path in [*files, *found] if os.path.lexists(path)]
    freed = 0
    try:
        mine = all(os.access(path.parent, os.W_OK) for path in files) and all(
            os.access(path, os.R_OK | os.W_OK | os.X_OK) for path in folders
        )
        if not mine:
            raise PermissionError(errno.EACCES, "some of its files are not yours to remove")
        for path in (path for path in files if path not in folders):
            freed += path.lstat().st_size
            path.unlink()
        shutil.rmtree(stored, ignore_errors=not folders)
    except OSError as error:
        reason = error.strerror or str(error)
        raise UsageError(f"cannot clear the embedding cache in {folder}: {reason}") from None
    return freed


def _text_key(text: str) -> bytes:
    """A text's key: a lone surrogate (from a request, say) is a key like any other, never an
    error that would turn the cache off for everyone."""
    try:
        return text.encode("utf-8", "surrogateescape")  # file names' undecodable bytes
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _vector(blob: bytes) -> np.ndarray:
    """A stored embedding; every one is L2-normalized, so any other row is damaged (a
    ValueError: a NaN one passed the length check before it was the shared one)."""
    vector = np.frombuffer(blob, dtype=np.float32)  # ValueError if not a whole number of floats
    return check_embedding(vector)


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()
