"""Full content hashes of weights files, remembered by file version: any change to a file's
bytes gives another digest, and an unchanged file is hashed once, not on every run.

A digest is remembered in `digests.sqlite3` beside the embedding cache under the file's real
path, device, inode, size, mtime and ctime: a rewrite in place changes ctime even when the
mtime is put back (`touch -r`, `cp -p`, `rsync -t`), and a replacement changes the inode. A file
changed less than RACY_SECONDS ago is hashed but not remembered, since a second write within
the kernel's timestamp tick would leave its version unchanged (git's "racily clean" files).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from clipcls.regular import open_regular

FILE_NAME = "digests.sqlite3"
CHUNK = 1 << 20  # bytes read at a time while hashing
RACY_SECONDS = 2.0  # a file changed more recently than this is not remembered
BUSY_TIMEOUT = 2.0  # seconds to wait on another process's write; then go on without the memo
SCHEMA = """CREATE TABLE IF NOT EXISTS digests (
    path BLOB PRIMARY KEY, dev INTEGER NOT NULL, inode INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime INTEGER NOT NULL, ctime INTEGER NOT NULL, digest TEXT NOT NULL)"""
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
Version = tuple[int, int, int, int, int]  # dev, inode, size, mtime_ns, ctime_ns

_seen: dict[tuple[str, Version], str] = {}  # this process's digests, by the same key


def _version(stat: os.stat_result) -> Version:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _hash(path: str) -> tuple[str, Version, Version]:
    """The file's digest, with its version before and after reading it. Opened non-blocking
    and refused unless regular: a FIFO swapped in after a check would block, /dev/zero never end."""
    digest = hashlib.sha256()
    with open_regular(path) as stream:
        status = os.fstat(stream.fileno())
        before = _version(status)
        while block := stream.read(CHUNK):
            digest.update(block)
        after = _version(os.fstat(stream.fileno()))
    return f"sha256:{digest.hexdigest()}", before, after


def _settled(version: Version) -> bool:
    """Whether the file last changed long enough ago for its version to tell every change."""
    return time.time_ns() - max(version[3], version[4]) > RACY_SECONDS * 1e9


def file_digest(path: str | Path, memo: Path | None = None) -> str:
    """`sha256:HEX` of the whole file at path (a link: of its target), remembered in the folder
    memo (None: in this process only). OSError if it cannot be read."""
    real = os.path.realpath(path)
    version = _version(os.stat(real))
    known = _seen.get((real, version)) or _recall(memo, real, version)
    if known is not None:
        _seen[(real, version)] = known
        return known
    digest, before, after = _hash(real)
    if before == after and before == _version(os.stat(real)) and _settled(before):
        _seen[(real, before)] = digest
        _remember(memo, real, before, digest)
    return digest


def file_digests(paths: Iterable[str | Path], memo: Path | None = None) -> dict[str, str]:
    """file_digest of many files, keyed by the path as given, the memo opened once (a
    connection per file would cost more than hashing small ones); unreadable files and
    anything but regular files are left out."""
    found: dict[str, str] = {}
    fresh: list[tuple[str, Version, str]] = []
    db = None
    if memo is not None and (memo / FILE_NAME).exists():
        with contextlib.suppress(sqlite3.Error, OSError):
            db = _connect(memo)
    try:
        for path in paths:
            with contextlib.suppress(OSError):
                real = os.path.realpath(path)
                version = _version(os.stat(real))
                known = _seen.get((real, version)) or _look_up(db, real, version)
                if known is None:
                    known, before, after = _hash(real)
                    if before == after and _settled(before):
                        _seen[(real, before)] = known
                        fresh.append((real, before, known))
                found[str(path)] = known
    finally:
        if db is not None:
            db.close()
    if fresh and memo is not None:
        with contextlib.suppress(sqlite3.Error, OSError), contextlib.closing(_connect(memo)) as db:
            db.executemany(
                "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(os.fsencode(real), *version, digest) for real, version, digest in fresh],
            )
    return found


def _look_up(db: sqlite3.Connection | None, real: str, version: Version) -> str | None:
    if db is None:
        return None
    try:
        row = db.execute(
            "SELECT digest FROM digests WHERE path = ? AND dev = ? AND inode = ? "
            "AND size = ? AND mtime = ? AND ctime = ?",
            (os.fsencode(real), *version),
        ).fetchone()
    except sqlite3.Error:
        return None
    found = row[0] if row is not None else None
    return found if isinstance(found, str) and DIGEST.fullmatch(found) else None


def _connect(memo: Path) -> sqlite3.Connection:
    memo.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(memo / FILE_NAME, timeout=BUSY_TIMEOUT, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(SCHEMA)
    except sqlite3.Error:
        db.close()
        raise
    return db


def _recall(memo: Path | None, real: str, version: Version) -> str | None:
    """The remembered digest of this version of the file; None if none, or on any failure
    (a damaged, locked or foreign memo only costs a hash)."""
    if memo is None or not (memo / FILE_NAME).exists():
        return None
    try:
        with contextlib.closing(_connect(memo)) as db:
            return _look_up(db, real, version)
    except (sqlite3.Error, OSError):
        return None


def _remember(memo: Path | None, real: str, version: Version, digest: str) -> None:
    if memo is None:
        return
    with contextlib.suppress(sqlite3.Error, OSError), contextlib.closing(_connect(memo)) as db:
        db.execute(
            "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?, ?)",
            (os.fsencode(real), *version, digest),
        )


def short_identity(identity: str) -> str:
    """A weights identity shortened for a message: its digest to 16 hex digits."""
    head, sep, digest = identity.rpartition("sha256:")
    return f"{head}{sep}{digest[:16]}" if sep else identity
