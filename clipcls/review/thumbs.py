"""Thumbnails for the review page: made on first request with libjpeg's draft scaling, kept on
disk under the cache folder by the file's version, and a placeholder where a file cannot be
shown (gone, not a regular file, too large, undecodable)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageDraw

from clipcls.errors import ImageError
from clipcls.filekey import FileKey
from clipcls.images import DEFAULT_MAX_MEGAPIXELS, load_image
from clipcls.remote import is_url
from clipcls.settings import ModelSettings

THUMB_SIZE = 256
QUALITY = 80
MISSING = "missing"
UNREADABLE = "unreadable"
FULL_SIZE = 2048  # formats browsers cannot show (TIFF, HEIC, ...) are sent re-encoded this big
FULL_BYTES = 64 << 20  # bigger files are sent re-encoded too
BROWSER_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}

Opener = Callable[[str], tuple[BinaryIO, FileKey]]  # a path to its open file and key


@dataclass(frozen=True)
class Thumb:
    """A JPEG to send, and why it is a placeholder (None for the image itself)."""

    data: bytes
    problem: str | None = None


def thumbs_folder() -> Path:
    """Where thumbnails are kept: `thumbs/` in the clipcls cache ($CLIPCLS_CACHE_DIR)."""
    return ModelSettings().resolved_cache_dir() / "thumbs"


def open_file(path: str) -> tuple[BinaryIO, FileKey]:
    """Open a regular file for reading, links resolved first and the last step not followed
    (a link swapped in after resolving is refused), never blocking on a FIFO or device; with
    the key of the file actually opened. OSError or ImageError otherwise."""
    if is_url(path):
        raise ImageError(f"not a local file: {path}")  # the page never fetches
    real = os.path.realpath(path)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(real, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImageError(f"not a regular file: {path}")
        key = FileKey.of_open(real, fd)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb"), key


def placeholder(word: str, size: int = THUMB_SIZE) -> bytes:
    """A gray JPEG with the word written on it."""
    image = Image.new("RGB", (size, size), (224, 224, 224))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), word)
    at = ((size - (right - left)) // 2, (size - (bottom - top)) // 2)
    draw.text(at, word, fill=(90, 90, 90))
    return encode(image)


def encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=QUALITY)
    return buffer.getvalue()


class Thumbs:
    """Thumbnails of files by path, made once per file version and kept in folder."""

    def __init__(
        self,
        folder: Path | None = None,
        size: int = THUMB_SIZE,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    ) -> None:
        self.folder = folder if folder is not None else thumbs_folder()
        self.size = size
        self.max_megapixels = max_megapixels
        self.placeholders = {word: placeholder(word, size) for word in (MISSING, UNREADABLE)}

    def get(self, path: str, opener: Opener = open_file) -> Thumb:
        """The thumbnail of the file at path (opened by opener); a placeholder where it cannot
        be read."""
        try:
            stream, key = opener(path)
        except FileNotFoundError:
            return Thumb(self.placeholders[MISSING], MISSING)
        except (OSError, ImageError):
            return Thumb(self.placeholders[UNREADABLE], UNREADABLE)
        with stream:
            cached = self.cached(key)
            try:
                return Thumb(cached.read_bytes())
            except OSError:
                pass  # not made yet (or being replaced): make it
            try:
                image = load_image(path, self.size, self.max_megapixels, data=stream)
            except ImageError:
                return Thumb(self.placeholders[UNREADABLE], UNREADABLE)
        image.thumbnail((self.size, self.size), Image.Resampling.BICUBIC)
        data = encode(image)
        self.store(cached, data)
        return Thumb(data)

    def cached(self, key: FileKey) -> Path:
        """The cache file of one version of one file (an edit changes size, mtime or ctime)."""
        text = "\0".join(str(part) for part in (key.path, *key.version, self.size))
        digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
        return self.folder / digest[:2] / f"{digest}.jpg"

    def store(self, target: Path, data: bytes) -> None:
        """Write atomically (a reader never sees half a file); a cache that cannot be written
        only costs the next request a decode."""
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
            with os.fdopen(handle, "wb") as out:
                out.write(data)
        except OSError:
            return
        try:
            os.replace(temporary, target)
        except OSError:
            Path(temporary).unlink(missing_ok=True)

    def full(self, path: str, opener: Opener = open_file) -> tuple[bytes, str] | Thumb:
        """The file itself with its media type where browsers show that format and it is not
        too big; else a JPEG of it at most FULL_SIZE pixels; a placeholder if unreadable."""
        try:
            stream, _ = opener(path)
        except FileNotFoundError:
            return Thumb(self.placeholders[MISSING], MISSING)
        except (OSError, ImageError):
            return Thumb(self.placeholders[UNREADABLE], UNREADABLE)
        with stream:
            try:
                data = stream.read(FULL_BYTES + 1)
                small = len(data) <= FULL_BYTES
                stream.seek(0)  # decoded whatever its size: only a real image is sent as is
                image = load_image(path, FULL_SIZE, self.max_megapixels, data=stream)
            except (OSError, ImageError):
                return Thumb(self.placeholders[UNREADABLE], UNREADABLE)
        kind = BROWSER_TYPES.get(_format(data))
        if kind is not None and small:
            return data, kind
        image.thumbnail((FULL_SIZE, FULL_SIZE), Image.Resampling.BICUBIC)
        return encode(image), "image/jpeg"


def _format(data: bytes) -> str:
    """Pillow's name for the format of the image in data ("" if it cannot tell)."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            return opened.format or ""
    except Exception:
        return ""
