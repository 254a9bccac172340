"""A label job: rows for a tree of images, resumable, each file placed after its row is saved."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipcls.classify import Prediction
from clipcls.errors import ClipclsError
from clipcls.labeling.options import LabelOptions
from clipcls.labeling.resume import RecordedRow, Recovered
from clipcls.labeling.sortfolder import (
    Refused,
    SortFolder,
    claim_sort_folder,
    existing_sort_folder,
)
from clipcls.labeling.sorting import (
    SortMode,
    absolute,
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
    """Choose each file's place under DIR/<label>/ and put it there after its row is saved,
    through the sort folder held open (folder; without one, each placing claims it)."""

    def __init__(
        self,
        root: Path,
        mode: SortMode,
        dry_run: bool,
        planned: Iterable[str] = (),
        multi_label: bool = False,
        folder: SortFolder | None = None,
    ) -> None:
        self.root, self.mode, self.dry_run, self.folder = root, mode, dry_run, folder
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
        reusable = None if self.mode is SortMode.MOVE else partial(self._holds, str(source))
        target = unique_destination(folder, name, self.planned, reusable)
        if self.planned is not None:
            self.planned.add(absolute(target))
        return str(target)

    def _holds(self, source: str, candidate: Path) -> bool:
        """Whether candidate already holds source's copy or link (an earlier run's)."""
        held = self.folder
        with nullcontext(held) if held is not None else existing_sort_folder(self.root) as folder:
            if folder is None:
                return False  # no sort folder yet: nothing to use again
            entry = folder.locate(str(candidate))
            return entry is not None and folder.holds(source, entry, self.mode)

    def apply(self, path: str, destination: str, finishing: bool = False) -> list[tuple[int, str]]:
        """Copy, link or move the file to each of its places (nothing in a dry run, or where
        already done; finishing: a resumed run's rows); each place not taken (refused, or gone
        meanwhile), by its index, with a line saying why (the file stays where it was)."""
        if self.dry_run:
            return []
        held = self.folder
        with nullcontext(held) if held is not None else claim_sort_folder(self.root) as folder:
            places = enumerate(self._places(destination))
            found = ((index, self._apply(folder, path, one, finishing)) for index, one in places)
            return [(index, why) for index, why in found if why is not None]

    def _apply(self, folder: SortFolder, path: str, destination: str, finish: bool) -> str | None:
        try:
            target = folder.locate(destination)
            if target is None:
                raise Refused(errno.EXDEV, f"not in {folder.root} (links are not followed)")
            folder.put(path, target, self.mode, finish)
        except (Refused, FileExistsError, FileNotFoundError) as error:  # this file's alone
            why = clean_text(error.strerror or str(error))
            return f"{clean_text(path)}: not placed at {clean_text(destination)}: {why}"
        except OSError as error:
            raise ClipclsError(
                f"cannot {self.mode.value} {clean_text(path)} to {clean_text(destination)}: "
                f"{error.strerror or error}"
            ) from None
        return None


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
    unplaced: int = 0  # places refused (a link as a label folder, a name taken) or gone

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
        folder: SortFolder | None = None,
    ) -> None:
        """backend: any source of predictions (local, Ray, a server, or your own); model_id:
        the model the rows record; folder: the sort folder, claimed and held for the run."""
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
                folder,
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
        (a file that went away meanwhile, a place refused), one message each."""
        problems = []
        for recorded in self.pending_placements():
            with section():
                try:
                    problems += self.place(recorded, finishing=True)
                except ClipclsError as error:
                    problems.append(str(error))
        return problems

    def write_rows(
        self,
        writer: Writer,
        rows: Iterable[Row],
        section: Section = contextlib.nullcontext,
        warn: Callable[[str], None] = lambda line: None,
    ) -> Iterator[Row]:
        """Write each row (from rows()), then place its file, yielding rows as they are written;
        warn hears of each place not taken.

        Each row and its placement run inside one `section()` (the CLI's holds stop signals
        until it ends), so an interrupt never leaves a row without its file or the reverse.
        """
        for row in rows:
            with section():
                writer.write(row)
                unplaced = self.place(row)
            for line in unplaced:
                warn(line)
            yield row

    def place(self, row: Row | RecordedRow, finishing: bool = False) -> list[str]:
        """Put the row's file in its label folder, only after the row is safely written; each
        place not taken, one line (counted, and not as placed)."""
        if self.sorter is None:
            return []
        unplaced = self.sorter.apply(row.path, row.destination, finishing)
        self.summary.unplaced += len(unplaced)
        if isinstance(row, Row) and unplaced:  # a resumed row was counted by its own run
            labels = row.labels if self.options.multi_label else (row.label,)
            self.summary.placed.subtract(labels[index] for index, _ in unplaced)
            self.summary.placed = +self.summary.placed  # no label left at 0
        return [why for _, why in unplaced]
