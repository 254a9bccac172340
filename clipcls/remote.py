"""Images behind http:// and https:// URLs: bounded downloads with timeouts and a few retries,
and the validators (ETag, Last-Modified) that let the cache recognize an unchanged image."""

from __future__ import annotations

import hashlib
import io
import time
import urllib.error
import urllib.request
from typing import BinaryIO

from clipcls.errors import ImageError

SCHEMES = ("http://", "https://")
TIMEOUT = 15.0  # seconds to connect, and between bytes
RETRIES = 3  # tries for a timeout, a dropped connection or a 5xx answer
BACKOFF = 0.5  # seconds before the second try, doubling after
BYTES_PER_MEGAPIXEL = 3 << 20  # raw RGB: no image within --max-megapixels needs more bytes
USER_AGENT = "clipcls (+https://github.com/mlfoundations/open_clip)"


def is_url(item: str | object) -> bool:
    """Whether an input names an http(s) URL rather than a local path."""
    return isinstance(item, str) and item.lower().startswith(SCHEMES)


def _request(url: str, method: str = "GET") -> urllib.request.Request:
    return urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT})


def _read_bounded(answer: BinaryIO, url: str, limit: int) -> bytes:
    declared = answer.headers.get("Content-Length") if hasattr(answer, "headers") else None
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ImageError(f"too large to download: {url} is {int(declared) >> 20} MB")
    data = answer.read(limit + 1)
    if len(data) > limit:
        raise ImageError(f"too large to download: {url} is over {limit >> 20} MB")
    return data


def fetch(url: str, max_megapixels: float) -> BinaryIO:
    """The URL's bytes as a stream, or ImageError saying why not (4xx at once, others after
    RETRIES tries); never more than the largest image within max_megapixels could need."""
    limit = int(max_megapixels * BYTES_PER_MEGAPIXEL)
    for attempt in range(RETRIES):
        try:
            with urllib.request.urlopen(_request(url), timeout=TIMEOUT) as answer:  # noqa: S310
                return io.BytesIO(_read_bounded(answer, url, limit))
        except urllib.error.HTTPError as error:
            if error.code < 500 or attempt == RETRIES - 1:
                raise ImageError(f"HTTP {error.code} {error.reason}: {url}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
            if attempt == RETRIES - 1:
                reason = getattr(error, "reason", None) or error
                raise ImageError(f"cannot download {url}: {reason} ({RETRIES} tries)") from None
        time.sleep(BACKOFF * 2**attempt)
    raise AssertionError("unreachable")


def validators(url: str) -> tuple[int, int] | None:
    """(size, version) from a HEAD request's Content-Length and ETag or Last-Modified, for the
    cache; None when the server gives no validator (then the URL is not cached) or fails."""
    try:
        with urllib.request.urlopen(_request(url, "HEAD"), timeout=TIMEOUT) as answer:  # noqa: S310
            headers = answer.headers
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError):
        return None
    tag = headers.get("ETag") or headers.get("Last-Modified")
    if not tag:
        return None
    length = headers.get("Content-Length", "")
    version = int.from_bytes(hashlib.sha256(tag.encode()).digest()[:7], "big")
    return (int(length) if length.isdigit() else 0, version)
