"""Images behind URLs: http(s):// downloads bounded in size and time, where a policy lets
them go (clipcls.webfetch); s3:// objects and prefixes through fsspec/s3fs (the `s3` extra,
credentials the usual AWS way); and the validators (ETag, Last-Modified) that let the cache
recognize an unchanged image."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import Any, BinaryIO

from clipcls.errors import ImageError, UsageError
from clipcls.webfetch import LOCAL, UrlPolicy, request

HTTP = ("http://", "https://")
S3 = "s3://"
SCHEMES = (*HTTP, S3)
BYTES_PER_MEGAPIXEL = 3 << 20  # raw RGB: no image within --max-megapixels needs more bytes


def is_url(item: str | object) -> bool:
    """Whether an input names a URL (http, https, s3) rather than a local path."""
    return isinstance(item, str) and item.lower().startswith(SCHEMES)


def is_s3(item: str | object) -> bool:
    """Whether an input names an S3 object or prefix."""
    return isinstance(item, str) and item.lower().startswith(S3)


def s3_filesystem() -> Any:
    """fsspec's S3 file system (s3fs), or a UsageError with the install line."""
    try:
        import s3fs
    except ImportError:
        raise UsageError("s3:// inputs need s3fs: pip install 'clipcls[s3]'") from None
    return s3fs.S3FileSystem()


def list_s3(url: str, wanted: Callable[[str], bool]) -> list[str]:
    """The image objects under an s3:// prefix (or the object itself), sorted, as URLs; wanted
    says which keys count (the same extension and hidden-file rules as folders)."""
    fs = s3_filesystem()
    root = url[len(S3) :]
    try:
        if fs.isfile(root):
            return [url]
        keys = fs.find(root.rstrip("/") + "/")
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot list {url}: {error}") from None
    base = root.rstrip("/") + "/"
    if not keys and not url.endswith("/"):
        return [url]  # named like an object: tried, so a missing one is an error row
    return [S3 + key for key in sorted(keys) if wanted(key.removeprefix(base))]


def _fetch_s3(url: str, limit: int) -> BinaryIO:
    fs = s3_filesystem()
    try:
        size = int(fs.info(url).get("size") or 0)
        if size > limit:
            raise ImageError(f"too large to download: {url} is {size >> 20} MB")
        with fs.open(url, "rb") as stream:
            return io.BytesIO(stream.read(limit))
    except FileNotFoundError:
        raise ImageError(f"no such object: {url}") from None
    except PermissionError:
        raise ImageError(f"access denied: {url}") from None
    except (OSError, ValueError) as error:
        raise ImageError(f"cannot download {url}: {error}") from None


def fetch(url: str, max_megapixels: float, policy: UrlPolicy = LOCAL) -> BinaryIO:
    """The URL's bytes as a stream, or ImageError saying why not; never more than the largest
    image within max_megapixels could need. http(s) goes where policy lets it (webfetch)."""
    limit = int(min(max_megapixels * BYTES_PER_MEGAPIXEL, 1 << 62))  # inf: no limit
    if is_s3(url):
        return _fetch_s3(url, limit)  # botocore retries on its own
    return io.BytesIO(request(url, limit, policy).body)


def validators(url: str) -> tuple[int, int] | None:
    """(size, version) from a HEAD request's Content-Length and ETag or Last-Modified, for the
    cache; None when the server gives no validator (then the URL is not cached) or fails."""
    if is_s3(url):
        try:
            info = s3_filesystem().info(url)
        except (OSError, ValueError, UsageError):
            return None
        tag = info.get("ETag") or info.get("LastModified")
        return None if not tag else (int(info.get("size") or 0), _version(str(tag)))
    try:
        headers = request(url, 0, LOCAL, "HEAD").headers
    except ImageError:
        return None
    tag = headers.get("ETag") or headers.get("Last-Modified")
    if not tag:
        return None
    length = headers.get("Content-Length", "")
    return (int(length) if length.isdigit() else 0, _version(tag))


def _version(tag: str) -> int:
    return int.from_bytes(hashlib.sha256(tag.encode()).digest()[:7], "big")
