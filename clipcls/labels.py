"""Parse labels: a comma-separated list or a labels file, each label with one or more texts."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from clipcls.errors import PromptFileError, UsageError
from clipcls.pathtext import clean_text


@dataclass(frozen=True)
class Label:
    """A label as reported, and the texts whose embeddings are averaged into it."""

    name: str
    texts: tuple[str, ...]

    @classmethod
    def plain(cls, name: str) -> Label:
        """A label embedded by its own name only."""
        return cls(name, (name,))


def parse_label(entry: str) -> Label:
    """Parse `name`, `name: text | text | ...` or `text | text` into a Label.

    Text is put in Unicode NFC form: `café` typed as e + combining accent (macOS file names,
    some keyboards) is the same label as the precomposed `café`. Bytes that are not UTF-8
    (`-l $'\\xff'`) are taken as their \\xNN text, as a class folder's name is shown: a label
    is text every output file can hold.
    """
    entry = unicodedata.normalize("NFC", clean_text(entry))
    head, sep, tail = entry.partition(":")
    name = head.strip()
    body = tail if sep else entry
    texts = tuple(text.strip() for text in body.split("|"))
    if not sep:
        name = texts[0]
    if not name:
        raise UsageError(f"empty label name in {entry!r}")
    if any(not text for text in texts):
        raise UsageError(f"empty name or description in label {entry!r}")
    return Label(name, texts)


def check_labels(labels: Sequence[Label]) -> tuple[Label, ...]:
    """Refuse an empty list and labels that appear twice (ignoring case)."""
    if not labels:
        raise UsageError("no labels given: use --labels cat,dog or --labels-file FILE")
    seen: dict[str, str] = {}
    for label in labels:
        key = label.name.casefold()
        if key in seen:
            raise UsageError(f"duplicate label {label.name!r} (also given as {seen[key]!r})")
        seen[key] = label.name
    return tuple(labels)


def parse_labels(text: str) -> tuple[Label, ...]:
    """Parse a comma-separated label list such as "cat, dog, car"."""
    entries = text.split(",")
    for position, entry in enumerate(entries, start=1):
        if not entry.strip():
            raise UsageError(f"empty label at position {position} in {text!r}")
    return check_labels([parse_label(entry) for entry in entries])


def _label_lines(lines: Iterable[str], source: str) -> list[Label]:
    labels = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            labels.append(parse_label(line))
        except UsageError as error:
            raise PromptFileError(f"{source}:{number}: {error}") from None
    return labels


def read_labels_file(path: str | Path) -> tuple[Label, ...]:
    """Read one label per line; `#` starts a comment line."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise PromptFileError(f"cannot read labels file {path}: {error}") from None
    labels = _label_lines(text.splitlines(), str(path))
    if not labels:
        raise PromptFileError(f"labels file {path} has no labels")
    try:
        return check_labels(labels)
    except UsageError as error:
        raise PromptFileError(f"{path}: {error}") from None
