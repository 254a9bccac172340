"""An output's rows for review (CSV, JSONL, Parquet): each row's label, scores and margin, the
run's labels in order from its setup record, its sort folder and mode."""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipcls.errors import UsageError
from clipcls.labeling.manifest import RunSetup, read_setup
from clipcls.output.rows import DEFAULT_UNKNOWN
from clipcls.pathtext import clean_text, text_to_path
from clipcls.remote import is_url
from clipcls.review.records import DESTINATIONS, Records, foreign, read_records


@dataclass(frozen=True)
class ReviewRow:
    """One row of the output, as the review page shows it."""

    index: int  # 0-based row number in the output: the stable id
    path: str  # as the output wrote it (path_to_text/clean_text form)
    label: str  # the output's label (may be the unknown label); "" for error rows
    scores: tuple[tuple[str, float], ...]  # (label, probability), best first, as many as known
    margin: float | None  # top-1 minus top-2 probability (or its bound); None for error rows
    destination: str | None  # sorted runs: where the file went (as the output wrote it)
    error: str | None  # unreadable at label time

    def digest(self) -> str:
        """The row as a decision or a move is bound to it: its file, label, scores, error and
        destination (an edit of any of them makes it another row)."""
        content = [self.path, self.label, list(self.scores), self.error, self.destination]
        return hashlib.sha256(json.dumps(content).encode()).hexdigest()


@dataclass(frozen=True)
class ReviewTable:
    """An output's rows and the run's settings that a review needs."""

    output: Path
    rows: tuple[ReviewRow, ...]  # in output order
    labels: tuple[str, ...]  # keys 1-9 follow this order (the run's label order)
    unknown_label: str  # `x` assigns it
    sort_into: Path | None  # None also for a dry run: it placed no file
    mode: str | None  # copy|symlink|hardlink|move for sorted runs
    margin_source: str  # "top-2" | "top-1 bound"
    cwd: str = ""  # the folder relative paths in the rows are taken from (a real path)
    planned: bool = False  # a --dry-run output: destinations were planned, not made
    notes: tuple[str, ...] = ()  # what was left out or guessed while reading, one line each

    def by_margin(self) -> list[int]:
        """Row indices, lowest margin first (the most doubtful answers), error rows last."""
        scored = [row for row in self.rows if row.margin is not None]
        scored.sort(key=lambda row: (row.margin, row.index))
        return [row.index for row in scored] + [r.index for r in self.rows if r.margin is None]

    def file_path(self, index: int) -> str:
        """The real path of a row's file, usable from here (relative ones from the run's cwd)."""
        return self._real(self.rows[index].path)

    def destination_path(self, index: int) -> str | None:
        """The real path a sorted row's file was placed at, None if it has none."""
        destination = self.rows[index].destination
        return None if destination is None else self._real(destination)

    def _real(self, text: str) -> str:
        path = text_to_path(text)
        if is_url(path) or os.path.isabs(path) or not self.cwd:
            return path
        return os.path.join(self.cwd, path)


def _number(value: Any) -> float:
    number = float(value)  # ValueError or TypeError: not a number
    if not math.isfinite(number):
        raise ValueError("not finite")
    return number


def _flat_scores(cells: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    """A CSV/Parquet row's scores: the model's top label (best_label under a threshold), then
    label_2, label_3, ... while they are filled."""
    top = cells.get("best_label") or cells["label"]
    scores = [(top, _number(cells["probability"]))]
    rank = 2
    while cells.get(f"label_{rank}"):
        scores.append((cells[f"label_{rank}"], _number(cells[f"probability_{rank}"])))
        rank += 1
    return tuple(scores)


def _flat_row(index: int, cells: dict[str, Any]) -> ReviewRow:
    destination = next((cells[name] for name in DESTINATIONS if cells.get(name)), None)
    if cells.get("error"):
        return ReviewRow(index, cells["path"], "", (), None, destination, cells["error"])
    scores = _flat_scores(cells)
    return ReviewRow(index, cells["path"], cells["label"], scores, None, destination, None)


def _json_row(index: int, record: dict[str, Any]) -> ReviewRow:
    destination = next((record[name] for name in DESTINATIONS if record.get(name)), None)
    if destination is not None and not isinstance(destination, str):
        raise ValueError("a destination that is not text")
    if record.get("error"):
        return ReviewRow(index, record["path"], "", (), None, destination, str(record["error"]))
    ranked = record["predictions"]
    scores = tuple((str(item["label"]), _number(item["probability"])) for item in ranked)
    label = record.get("label", scores[0][0])  # a label run writes it; predict's is the top one
    if not isinstance(label, str):
        raise ValueError("a label that is not text")
    return ReviewRow(index, record["path"], label, scores, None, destination, None)


def _with_margin(row: ReviewRow) -> ReviewRow:
    """Top-1 minus top-2; with top-1 alone, its lower bound 2*top1 - 1 (top-2 <= 1 - top-1)."""
    if not row.scores:
        return row
    first = row.scores[0][1]
    margin = first - row.scores[1][1] if len(row.scores) > 1 else 2 * first - 1
    return ReviewRow(row.index, row.path, row.label, row.scores, margin, row.destination, None)


def _rows(output: Path, found: Records) -> list[ReviewRow]:
    build = _flat_row if found.kind.flat else _json_row
    rows: list[ReviewRow] = []
    first: dict[str, int] = {}  # a run writes each file once: decisions and moves go by file
    for index, record in enumerate(found.records):
        try:
            row = build(index, record)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise foreign(output, f"row {index + 1} has no label and scores") from None
        earlier = first.setdefault(row.path, index)
        if earlier != index:
            why = f"rows {earlier + 1} and {index + 1} both name {clean_text(row.path)}"
            raise foreign(output, why)
        rows.append(_with_margin(row))
    return rows


def _seen_labels(rows: list[ReviewRow], unknown: str) -> tuple[str, ...]:
    """The labels the rows name, in first-seen order (an output without a setup record)."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update((label, None) for label, _ in row.scores)
        if row.label and row.label != unknown:
            seen.setdefault(row.label, None)
    return tuple(seen)


def _inferred_unknown(rows: list[ReviewRow]) -> str:
    """The unknown label of an output without a setup record: a row's label that differs from
    the model's top label is it (a threshold's work); else the default."""
    for row in rows:
        if row.scores and row.label != row.scores[0][0]:
            return row.label
    return DEFAULT_UNKNOWN


def _setup(output: Path, notes: list[str]) -> RunSetup | None:
    try:
        return read_setup(output)
    except UsageError:
        notes.append(f"the setup record beside {clean_text(output.name)} is unreadable: ignored")
        return None


def load_review(output: Path, unknown_label: str | None = None) -> ReviewTable:
    """The output's rows for review; UsageError (one line) for a missing file, a file clipcls
    did not write, or one with no rows. unknown_label overrides the run's."""
    found = read_records(output)
    notes = []
    if found.dropped_bytes:
        notes.append(f"the last line of {clean_text(output.name)} was cut short: left out")
    rows = _rows(output, found)
    if not rows:
        raise UsageError(f"{clean_text(str(output))} holds no rows")
    setup = _setup(output, notes)
    recorded = setup.unknown_label if setup is not None else None
    unknown = unknown_label or recorded or (DEFAULT_UNKNOWN if setup else _inferred_unknown(rows))
    if setup is not None:
        labels = tuple(name for name, _ in setup.labels)
    else:
        labels = _seen_labels(rows, unknown)
    if unknown in labels and (unknown_label or recorded):
        raise UsageError(f"the unknown label {unknown!r} is one of the labels: give another")
    while unknown in labels:  # a run without a threshold may have a label named "unknown"
        unknown = f"_{unknown}"
    planned = "planned_destination" in found.header or any(
        "planned_destination" in record for record in found.records[:1]
    )
    sort_into = setup.sort_into if setup is not None and not planned else None
    margin_source = "top-2" if all(len(r.scores) > 1 for r in rows if r.scores) else "top-1 bound"
    return ReviewTable(
        output=output,
        rows=tuple(rows),
        labels=labels,
        unknown_label=unknown,
        sort_into=Path(text_to_path(sort_into)) if sort_into else None,
        mode=setup.mode if sort_into and setup is not None else None,
        margin_source=margin_source,
        cwd=text_to_path(setup.cwd) if setup is not None and setup.cwd else "",
        planned=planned,
        notes=tuple(notes),
    )
