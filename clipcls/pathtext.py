"""File paths as text and back: a reversible escape for names that are not UTF-8, and names cut
to the file system's byte limit."""

from __future__ import annotations

import codecs
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


def _escaped(char: str) -> str:
    """One character a stream cannot encode: an undecodable file-name byte as \\xNN (as
    clean_text writes it), any other as JSON writes it (\\u00e9, \\ud83d\\udc31), so that JSON
    sent to an ASCII stdout stays valid and reads back exactly."""
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    units = char.encode("utf-16-be", "surrogatepass")
    return "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))


def _escape_unencodable(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    bad = error.object[error.start : error.end]
    return "".join(_escaped(char) for char in bad), error.end


ESCAPE_ERRORS = "clipcls.escape"  # a codec error handler: what a stream cannot encode, escaped
codecs.register_error(ESCAPE_ERRORS, _escape_unencodable)


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
