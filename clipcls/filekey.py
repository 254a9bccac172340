"""Which version of a file (or URL) an input is: the key the embedding cache stores it under."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from clipcls.remote import is_url, validators


@dataclass(frozen=True)
class FileKey:
    """A file as the cache knows it: where it is and which version of it."""

    path: str
    size: int
    mtime: int
    inode: int = 0
    ctime: int = 0

    @classmethod
    def of(cls, path: str | Path) -> FileKey | None:
        """The key of an existing file, or None if it cannot be stat'ed; a URL's from its
        validators (None, so not cached, where the server gives none)."""
        if is_url(path):
            found = validators(str(path))
            return None if found is None else cls(str(path), found[0], found[1])
        try:
            stat = os.stat(path)
        except OSError:
            return None
        absolute = os.path.abspath(path)
        return cls(absolute, stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)

    @classmethod
    def of_open(cls, path: str, fd: int) -> FileKey:
        """The key of the file open as fd, named path: its identity from the file itself, not
        from a second look-up of the name (which may lead elsewhere by now)."""
        stat = os.fstat(fd)
        return cls(path, stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)

    @classmethod
    def of_content(cls, data: bytes) -> FileKey:
        """A key by the bytes themselves (an upload): the same bytes are one entry whoever
        sends them and whatever they are called. Never an absolute path nor a URL."""
        return cls(f"sha256:{hashlib.sha256(data).hexdigest()}", len(data), 0)

    @property
    def version(self) -> tuple[int, int, int, int]:
        return (self.size, self.mtime, self.inode, self.ctime)
