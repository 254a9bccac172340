"""A multi-label ground truth: the `path,labels` CSV that `evaluate --multi-label` reads, its
labels `;`-joined per image (an empty cell: none of them, a negative for every label), checked
whole before any model loads."""

from __future__ import annotations

import csv
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipcls.errors import UsageError
from clipcls.pathtext import clean_text

SEPARATOR = ";"
COLUMNS = ("path", "labels")


@dataclass(frozen=True)
class MultiLabelTruth:
    """Every image of the CSV with the labels that apply to it, in the CSV's order."""

    source: Path  # the CSV
    labels: tuple[str, ...]  # the label set, in its order
    paths: tuple[Path, ...]
    truth: np.ndarray  # (n_images, n_labels) bool: whether each label applies

    def names_of(self, row: int) -> list[str]:
        """The labels that apply to image `row`, in label order."""
        return [name for name, on in zip(self.labels, self.truth[row], strict=True) if on]


@dataclass(frozen=True)
class _Row:
    line: int
    path: Path
    labels: tuple[str, ...]


def _split(cell: str) -> tuple[str, ...]:
    """`a; b ;c` -> (a, b, c): trimmed, NFC (as labels given on the command line), each once."""
    names = (unicodedata.normalize("NFC", part.strip()) for part in cell.split(SEPARATOR))
    return tuple(dict.fromkeys(name for name in names if name))


def _rows(source: Path) -> list[_Row]:
    """The CSV's rows with their line numbers; blank lines are skipped."""
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read labels CSV {source}: {error}") from None
    reader = csv.reader(text.splitlines())
    header = [cell.strip().lower() for cell in next(reader, [])]
    if any(column not in header for column in COLUMNS):
        found = clean_text(",".join(header)) or "nothing"
        raise UsageError(
            f"{source} needs a header row with columns path,labels (its first row is {found})"
        )
    where, which = header.index("path"), header.index("labels")
    folder, rows = source.parent, []
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        line = reader.line_num
        if any(cell.strip() for cell in cells[len(header) :]):
            # `a.jpg,cat,dog` read as cat alone: a label lost without a word
            raise UsageError(
                f"{source}:{line}: {len(cells)} cells, the header has {len(header)}: join an "
                f"image's labels with {SEPARATOR!r} (quote a cell that holds a comma)"
            )
        padded = [*cells, *[""] * len(header)]
        name, labels = padded[where].strip(), _split(padded[which])
        if not name:
            raise UsageError(f"{source}:{line}: the path cell is empty")
        rows.append(_Row(line, Path(os.path.normpath(folder / name)), labels))
    if not rows:
        raise UsageError(f"{source} lists no images")
    return rows


def _check_files(source: Path, rows: Sequence[_Row]) -> None:
    """UsageError naming a repeated path, or the missing files (the first and how many)."""
    seen: dict[Path, int] = {}
    for row in rows:
        if row.path in seen:
            raise UsageError(
                f"{source}:{row.line}: {clean_text(str(row.path))} is listed again "
                f"(first on line {seen[row.path]})"
            )
        seen[row.path] = row.line
    for row in rows:  # a FIFO would block the run, /dev/zero never end
        if row.path.exists() and not row.path.is_file():
            where = clean_text(str(row.path))
            raise UsageError(f"{source}:{row.line}: {where} is not a regular file")
    missing = [row for row in rows if not row.path.is_file()]
    if len(missing) == 1:
        first = missing[0]
        raise UsageError(f"{source}:{first.line}: no such file: {clean_text(str(first.path))}")
    if missing:
        first = missing[0]
        raise UsageError(
            f"{len(missing)} files listed in {source} do not exist, the first "
            f"{clean_text(str(first.path))} (line {first.line})"
        )


def _label_set(source: Path, rows: Sequence[_Row], given: Sequence[str] | None) -> list[str]:
    """The given labels, every CSV label among them; else the CSV's in first-seen order."""
    found = list(dict.fromkeys(name for row in rows for name in row.labels))
    if given is None:
        if not found:
            raise UsageError(
                f"{source} gives no image a label: name the label set with --labels (every "
                "image is then a negative for each)"
            )
        return found
    unknown = [name for name in found if name not in given]
    if unknown:
        row = next(row for row in rows if unknown[0] in row.labels)
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise UsageError(
            f"{source}:{row.line}: label {clean_text(unknown[0])!r} is not among the given "
            f"labels{more}"
        )
    return list(given)


def read_truth(source: Path, labels: Sequence[str] | None = None) -> MultiLabelTruth:
    """Read and check the CSV (paths relative to its folder, or absolute).

    Args:
        labels: the label set in its order (--labels); None: the CSV's labels as first seen.
    """
    if not source.is_file():
        raise UsageError(f"labels CSV {source} does not exist or is not a file")
    rows = _rows(source)
    _check_files(source, rows)
    names = _label_set(source, rows, labels)
    index = {name: i for i, name in enumerate(names)}
    truth = np.zeros((len(rows), len(names)), dtype=bool)
    for i, row in enumerate(rows):
        truth[i, [index[name] for name in row.labels]] = True
    return MultiLabelTruth(source, tuple(names), tuple(row.path for row in rows), truth)
