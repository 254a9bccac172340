"""A label the run did not have, added during review: checked as a label and as the folder
name it becomes (--apply's label folder, --export-support's), so it is one of both as typed."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from clipcls.errors import UsageError
from clipcls.labeling.sorting import safe_folder_name
from clipcls.labels import parse_label
from clipcls.pathtext import clean_text

MAX_ADDED = 1000  # labels one review may add
# Control, format (bidi overrides, zero-width), line and paragraph separators, unassigned
HIDDEN = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def check_new_label(text: str, existing: Iterable[str]) -> str:
    """The new label's name (Unicode NFC, stripped); UsageError naming what is wrong: empty,
    a hidden or control character, a character a folder name or `--labels` cannot hold (`/`,
    `\\`, `:`, `,`, ...), a name the label folder would change, or a label there already (or
    a label's folder: `a_b` beside `a/b`)."""
    name = unicodedata.normalize("NFC", text).strip()
    shown = clean_text(name)[:80]
    if not name:
        raise UsageError("a new label needs a name")
    if clean_text(name) != name or any(unicodedata.category(c) in HIDDEN for c in name):
        raise UsageError(f"label {shown!r} holds a control or invisible character")
    if "," in name or name.startswith("#") or parse_label(name).name != name:
        raise UsageError(f"label {shown!r}: `,`, `:`, `|` and a leading `#` are label syntax")
    if safe_folder_name(name) != name:
        raise UsageError(
            f'label {shown!r} cannot name its folder as it is (no / \\ : * ? " < > |, no '
            "leading or trailing dot or space, no device name, at most 120 characters)"
        )
    for label in existing:
        if label.casefold() == name.casefold():
            raise UsageError(f"{shown!r} is a label already ({clean_text(label)!r})")
        if safe_folder_name(label).casefold() == name.casefold():  # as `label` refuses it
            raise UsageError(
                f"label {shown!r} would share the folder of label {clean_text(label)!r}: "
                "name it otherwise"
            )
    return name
