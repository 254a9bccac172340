"""File paths as text and back: a reversible escape for names that are not UTF-8, and names cut
to the file system's byte limit."""

from __future__ import annotations

import functools
import os
import re

NAME_MAX = 255  # bytes in one file name on ext4, XFS, APFS, NTFS (in UTF-16 units), ...
# On POSIX a name is bytes: a byte that is not UTF-8 is written as \xNN, so a literal backslash
# must be written as \\ for the text to map back to exactly one name. Windows names are text.
ESCAPES = os.name != "nt"
ESCAPED = re.compile(r"\\(\\|x[0-9a-fA-F]{2})")


def path_to_text(path: str) -> str:
    """A path as UTF-8 text: undecodable bytes become \\xNN and a backslash becomes \\\\."""
    if not ESCAPES:
        return path
    escaped = path.replace("\\", "\\\\")
    return escaped.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def clean_text(text: str) -> str:
    """Make undecodable file-name bytes (lone surrogates) printable as \\xNN escapes."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name decodes to (\ud800): escape it too
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def text_to_path(text: str) -> str:
    """Undo path_to_text: the path with its original bytes."""
    if not ESCAPES or "\\" not in text:
        return text

    def unescape(match: re.Match[str]) -> str:
        code = match.group(1)
        return "\\" if code == "\\" else chr(0xDC00 + int(code[1:], 16))

    return ESCAPED.sub(unescape, text)


def name_bytes(name: str) -> int:
    """The length of a file name in bytes, as the file system counts it."""
    return len(os.fsencode(name))


def fit_name(stem: str, tail: str, limit: int = NAME_MAX) -> str:
    """stem + tail, the stem shortened by whole characters until the name fits in limit bytes."""
    while stem and name_bytes(stem + tail) > limit:
        stem = stem[:-1]
    return stem + tail


@functools.lru_cache(maxsize=4096)
def _real_folder(folder: str) -> str:
    return os.path.realpath(folder)


def path_key(path: str, cwd: str | None = None) -> str:
    """The file a path names, as one string: absolute, its folders' links resolved.

    Two spellings of one file (`tree/a.jpg`, `/abs/tree/./a.jpg`) give the same key; the file
    itself is not resolved, so a link and its target stay two entries. A relative path is taken
    from cwd (the current folder when None).
    """
    if path.lower().startswith(("http://", "https://", "s3://")):
        return path  # a URL is its own key
    full = os.path.join(cwd or os.getcwd(), path)
    folder, name = os.path.split(full)
    return os.path.join(_real_folder(folder or os.sep), name)
