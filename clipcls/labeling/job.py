"""A label job: rows for a tree of images, resumable, each file placed after its row is saved."""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipcls.classify import Prediction
from clipcls.errors import ClipclsError
from clipcls.labeling.options import LabelOptions
from clipcls.labeling.resume import RecordedRow, Recovered
from clipcls.labeling.sorting import (
    SortMode,
    absolute,
    is_unfinished_move,
    place,
    safe_folder_name,
    same_file,
    unique_destination,
)
from clipcls.labels import Label
from clipcls.output.rows import (
    MULTI_THRESHOLD,
    SEPARATOR,
    Row,
    clean_text,
    to_multi_row,
    to_row,
)
from clipcls.pathtext import path_key
from clipcls.prompts import TemplateSet
from clipcls.remote import is_url

if TYPE_CHECKING:
    from clipcls.labeling.predictor import Predictor
    from clipcls.output.writers import Writer


class Sorter:
    """Choose each file's place under DIR/<label>/ and put it there after its row is saved."""

    def __init__(
        self,
        root: Path,
        mode: SortMode,
        dry_run: bool,
        planned: Iterable[str] = (),
        multi_label: bool = False,
    ) -> None:
        self.root, self.mode, self.dry_run = root, mode, dry_run
        # multi-label: a file goes into each of its labels' folders, its places joined by ;
        self.multi_label = multi_label
        # A dry run creates nothing on disk, so it must remember the names it has handed out,
        # a resumed one those of the rows before too.
        self.planned: set[Path] | None = None
        if dry_run:
            self.planned = {Path(one) for p in planned for one in self._places(p)}

    def _places(self, destination: str) -> list[str]:
        if not destination:
            return []
        return destination.split(SEPARATOR) if self.multi_label else [destination]

    def destination(self, row: Row) -> str:
        """A collision-free path for the row's file in its label folder ("" for errors;
        multi-label: one in each of its labels' folders, joined by ;, "" for none)."""
        if row.error is not None or is_url(row.path):
            return ""  # URLs are labeled, not sorted: there is no file here to place
        if not self.multi_label:
            return self._destination(row.label, Path(row.path), Path(row.path).name)
        # a ; in the file's name would split its places apart: the sorted names have none
        name = Path(row.path).name.replace(SEPARATOR, "_")
        found = (self._destination(label, Path(row.path), name) for label in row.labels)
        return SEPARATOR.join(found)

    def _destination(self, label: str, source: Path, name: str) -> str:
        folder = self.root / safe_folder_name(label)
        # A name that already holds this very file (an earlier run's copy) is used again;
        # a move has no such twin, since its source would be gone.
        reusable = None if self.mode is SortMode.MOVE else partial(same_file, source)
        target = unique_destination(folder, name, self.planned, reusable)
        if self.planned is not None:
            self.planned.add(absolute(target))
        return str(target)

    def apply(self, path: str, destination: str) -> None:
        """Copy, link or move the file to each of its places (nothing in a dry run, or where
        already done)."""
        if self.dry_run:
            return
        for one in self._places(destination):
            self._apply(path, one)

    def _apply(self, path: str, destination: str) -> None:
        source, target = Path(path), Path(destination)
        try:
            if os.path.lexists(target):
                if self.mode is SortMode.MOVE and is_unfinished_move(source, target):
                    os.unlink(source)
                return  # placed before; a different file at the source is a newcomer
            place(source, target, self.mode)
        except OSError as error:
            raise ClipclsError(
                f"cannot {self.mode.value} {clean_text(path)} to {clean_text(destination)}: "
                f"{error.strerror or error}"
            ) from None


@dataclass
class Summary:
    """What a run did, for the end-of-run report."""

    per_label: Counter[str] = field(default_factory=Counter)  # multi-label: each of a row's
    images: int = 0  # labeled (not failed)
    unlabeled: int = 0  # multi-label: rows no label reached
    failures: int = 0
    skipped: int = 0  # already in the resumed file
    started: float = field(default_factory=time.monotonic)
    placed: Counter[str] = field(default_factory=Counter)  # files given a sorted place, per label
    unsorted_urls: int = 0  # labeled URLs: no file here to sort

    @property
    def processed(self) -> int:
        return self.images + self.failures

    def rate(self) -> float:
        """Images per second in this run."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return self.processed / elapsed


def is_done(recovered: Recovered, path: Path, options: LabelOptions) -> bool:
    """Whether the resumed output already has a row for the file now at path.

    After a move, a file at a recorded path is a newcomer with the same name, not the file
    labeled before (that one is at its recorded destination): it needs a row of its own.
    """
    key = path_key(str(path))
    if key not in recovered.done:
        return False
    if options.mode is not SortMode.MOVE or options.dry_run:
        return True
    moved_to = recovered.destinations.get(key)
    if moved_to is None or not os.path.lexists(moved_to):
        return True
    return same_file(path, Path(moved_to), by_content=False)


Section = Callable[[], AbstractContextManager[Any]]


class LabelJob:
    """Turn image paths into rows, one per file, skipping those a resumed file already holds."""

    def __init__(
        self,
        backend: Predictor,
        labels: Sequence[Label],
        templates: TemplateSet,
        options: LabelOptions,
        model_id: str,
        recovered: Recovered | None = None,
    ) -> None:
        """backend: any source of predictions (local, Ray, a server, or your own); model_id:
        the model the rows record."""
        self.backend, self.labels, self.templates = backend, tuple(labels), templates
        self.options, self.model_id = options, model_id
        self.recovered = recovered or Recovered()
        self.columns = options.columns(self.labels)
        self.sorter = (
            Sorter(
                options.sort_into,
                options.mode,
                options.dry_run,
                self.recovered.destinations.values(),
                options.multi_label,
            )
            if options.sort_into is not None
            else None
        )
        self.summary = Summary()

    def todo(self, paths: Iterable[Path]) -> Iterator[Path]:
        """The paths still to label, counting the skipped ones."""
        for path in paths:
            if is_done(self.recovered, path, self.options):
                self.summary.skipped += 1
            else:
                yield path

    def pending_placements(self) -> list[RecordedRow]:
        """Recorded rows whose file an interrupted run may not have placed yet."""
        if self.sorter is None or self.options.dry_run:
            return []
        return list(self.recovered.placements)

    def rows(self, paths: Iterable[Path]) -> Iterator[Row]:
        """One row per path still to label, in the order the backend answers; write each, then
        call place(row). The backend is asked at once (a local one embeds the prompts here, and
        the run's clock starts after that); the paths are walked as rows are taken."""
        options = self.options
        predictions = self.backend.predict(
            self.todo(paths), self.labels, self.templates, embeddings=options.save_embeddings
        )
        self.summary.started = time.monotonic()
        return self._rows(predictions)

    def _rows(self, predictions: Iterable[Prediction]) -> Iterator[Row]:
        options = self.options
        for prediction in predictions:
            if options.multi_label:
                cut = options.row_threshold()
                row = to_multi_row(
                    prediction,
                    MULTI_THRESHOLD if cut is None else cut,
                    options.unknown_label,
                    self.model_id,
                )
            else:
                row = to_row(
                    prediction,
                    self.columns.top_k,
                    options.row_threshold(),
                    options.unknown_label,
                    self.model_id,
                )
            if self.sorter is not None:
                row = replace(row, destination=self.sorter.destination(row))
            self._count(row)
            yield row

    def _count(self, row: Row) -> None:
        """Add the row to the summary: its label, and whether it was given a sorted place."""
        if row.error is not None:
            self.summary.failures += 1
            return
        self.summary.images += 1
        labels = row.labels if self.options.multi_label else (row.label,)
        self.summary.per_label.update(labels)
        self.summary.unlabeled += not labels
        if self.sorter is not None and is_url(row.path):
            self.summary.unsorted_urls += 1
        elif self.sorter is not None and row.destination:
            self.summary.placed.update(labels)

    def finish_pending(self, section: Section = contextlib.nullcontext) -> list[str]:
        """Finish placing the files of the last rows an interrupted run wrote; the problems
        (a file that went away meanwhile), one message each."""
        problems = []
        for recorded in self.pending_placements():
            with section():
                try:
                    self.place(recorded)
                except ClipclsError as error:
                    problems.append(str(error))
        return problems

    def write_rows(
        self, writer: Writer, rows: Iterable[Row], section: Section = contextlib.nullcontext
    ) -> Iterator[Row]:
        """Write each row (from rows()), then place its file, yielding rows as they are written.

        Each row and its placement run inside one `section()` (the CLI's holds stop signals
        until it ends), so an interrupt never leaves a row without its file or the reverse.
        """
        for row in rows:
            with section():
                writer.write(row)
                self.place(row)
            yield row

    def place(self, row: Row | RecordedRow) -> None:
        """Put the row's file in its label folder; only after the row is safely written."""
        if self.sorter is not None:
            self.sorter.apply(row.path, row.destination)
