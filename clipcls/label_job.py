"""A label job: rows for a tree of images, resumable, each file placed after its row is saved."""

from __future__ import annotations

import contextlib
import os
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipcls.classify import Classifier, Prediction
from clipcls.errors import ClipclsError, UsageError
from clipcls.labels import Label
from clipcls.output.files import RESUMABLE, Format
from clipcls.output.manifest import RunSetup
from clipcls.output.resume import RecordedRow, Recovered
from clipcls.output.rows import DEFAULT_UNKNOWN, Columns, Row, clean_text, to_row
from clipcls.pathtext import path_key, path_to_text
from clipcls.prompts import TemplateSet
from clipcls.remote import is_url
from clipcls.sorting import (
    SortMode,
    absolute,
    first_on_another_device,
    is_unfinished_move,
    place,
    safe_folder_name,
    same_file,
    unique_destination,
)

if TYPE_CHECKING:
    from clipcls.output.writers import Writer


@dataclass(frozen=True)
class LabelOptions:
    """How predictions become rows, and whether files are sorted into label folders."""

    top_k: int = 1
    threshold: float | None = None
    unknown_label: str = DEFAULT_UNKNOWN
    sort_into: Path | None = None
    mode: SortMode = SortMode.COPY
    dry_run: bool = False
    save_embeddings: bool = False

    def columns(self, n_labels: int) -> Columns:
        """The output's columns for these options."""
        destination = ""
        if self.sort_into is not None:
            destination = "planned_destination" if self.dry_run else "destination"
        return Columns(
            top_k=min(self.top_k, n_labels),
            best_label=self.threshold is not None,
            model=True,
            destination=destination,
            embedding=self.save_embeddings,
        )


class Sorter:
    """Choose each file's place under DIR/<label>/ and put it there after its row is saved."""

    def __init__(
        self, root: Path, mode: SortMode, dry_run: bool, planned: Iterable[str] = ()
    ) -> None:
        self.root, self.mode, self.dry_run = root, mode, dry_run
        # A dry run creates nothing on disk, so it must remember the names it has handed out,
        # a resumed one those of the rows before too.
        self.planned: set[Path] | None = {Path(p) for p in planned} if dry_run else None

    def destination(self, row: Row) -> str:
        """A collision-free path for the row's file in its label folder ("" for errors)."""
        if row.error is not None or is_url(row.path):
            return ""  # URLs are labeled, not sorted: there is no file here to place
        folder = self.root / safe_folder_name(row.label)
        source = Path(row.path)
        # A name that already holds this very file (an earlier run's copy) is used again;
        # a move has no such twin, since its source would be gone.
        reusable = None if self.mode is SortMode.MOVE else partial(same_file, source)
        target = unique_destination(folder, source.name, self.planned, reusable)
        if self.planned is not None:
            self.planned.add(absolute(target))
        return str(target)

    def apply(self, path: str, destination: str) -> None:
        """Copy, link or move the file (nothing in a dry run, or if already done)."""
        if self.dry_run or not destination:
            return
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

    per_label: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    skipped: int = 0  # already in the resumed file
    started: float = field(default_factory=time.monotonic)
    placed: Counter[str] = field(default_factory=Counter)  # files given a sorted place, per label
    unsorted_urls: int = 0  # labeled URLs: no file here to sort

    @property
    def processed(self) -> int:
        return sum(self.per_label.values()) + self.failures

    def rate(self) -> float:
        """Images per second in this run."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return self.processed / elapsed


def check_unknown_label(
    unknown_label: str | None, threshold: float | None, labels: tuple[Label, ...]
) -> str:
    """The unknown label, refused where it would be ignored or merge into a real label."""
    if unknown_label is None:
        return DEFAULT_UNKNOWN
    if threshold is None:
        raise UsageError("--unknown-label needs --threshold P: no image gets it otherwise")
    same = unicodedata.normalize("NFC", unknown_label).casefold()
    if any(label.name.casefold() == same for label in labels):
        raise UsageError(
            f"--unknown-label {unknown_label!r} is one of the labels: give a name of its own"
        )
    return unknown_label


def check_file_format(kind: Format, resume: bool, save_embeddings: bool) -> None:
    """Refuse what a format cannot do: resume Parquet, or hold embeddings in CSV."""
    if resume and kind not in RESUMABLE:
        raise UsageError(
            f"a {kind.value} output cannot be resumed (its footer is written at the end): "
            "use -o FILE.csv or FILE.jsonl for a resumable run"
        )
    if save_embeddings and kind is Format.CSV:
        raise UsageError("--save-embeddings needs -o FILE.jsonl or FILE.parquet, not CSV")


def check_sorting(kind: Format, options: LabelOptions, inputs: list[str]) -> None:
    """Refuse, before anything is written, sorting that a kill or the file systems would break:
    a move into Parquet (whose rows exist only once its footer is written, so a kill would leave
    moved files with no row anywhere) and hard links across file systems."""
    if options.sort_into is None or options.dry_run:
        return
    if kind is Format.PARQUET and options.mode is SortMode.MOVE:
        raise UsageError(
            "--mode move cannot write -o FILE.parquet: a kill would leave moved files whose "
            "rows exist nowhere; use -o FILE.csv or FILE.jsonl (resumable), or --mode copy"
        )
    other = None
    if options.mode is SortMode.HARDLINK:
        other = first_on_another_device(options.sort_into, inputs)
    if other is not None:
        raise UsageError(
            f"--mode hardlink cannot link {clean_text(other)} into "
            f"{clean_text(str(options.sort_into))}: they are on different file systems; sort "
            "into a folder on the same one, or use --mode copy or symlink"
        )


def run_setup(
    kind: Format,
    options: LabelOptions,
    labels: tuple[Label, ...],
    templates: TemplateSet,
    model_key: str | None,
) -> RunSetup:
    """This run's setup, as recorded beside the output and compared on --resume; model_key is
    the weights' identity (model_identity's key here, a server's reported weights there)."""
    sort_into = options.sort_into
    return RunSetup(
        format=kind.value,
        columns=tuple(options.columns(len(labels)).header()),
        labels=RunSetup.label_texts(labels),
        templates=templates.templates,
        top_k=options.top_k,
        threshold=options.threshold,
        unknown_label=options.unknown_label if options.threshold is not None else None,
        sort_into=None if sort_into is None else path_to_text(os.path.realpath(sort_into)),
        mode=None if sort_into is None else options.mode.value,
        model_key=model_key,
        cwd=path_to_text(os.getcwd()),
    )


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
Classify = Callable[[Iterable[Path]], Iterator[Prediction]]


class LabelJob:
    """Turn image paths into rows, one per file, skipping those a resumed file already holds."""

    def __init__(
        self,
        classifier: Classifier | Classify,
        options: LabelOptions,
        model_id: str,
        recovered: Recovered | None = None,
        n_labels: int | None = None,
    ) -> None:
        """classifier: a Classifier, or any function from paths to Predictions (such as the
        Ray engine's; then give n_labels)."""
        if isinstance(classifier, Classifier):
            self.classify: Classify = classifier.classify_paths
            n_labels = len(classifier.labels)
        else:
            self.classify = classifier
        self.options, self.model_id = options, model_id
        self.recovered = recovered or Recovered()
        self.columns = options.columns(n_labels or 1)
        self.sorter = (
            Sorter(
                options.sort_into,
                options.mode,
                options.dry_run,
                self.recovered.destinations.values(),
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
        """One row per path, in order; write it, then call place(row)."""
        options = self.options
        for prediction in self.classify(self.todo(paths)):
            row = to_row(
                prediction,
                self.columns.top_k,
                options.threshold,
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
        self.summary.per_label[row.label] += 1
        if self.sorter is not None and row.destination:
            self.summary.placed[row.label] += 1
        elif self.sorter is not None:
            self.summary.unsorted_urls += 1

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
        self, writer: Writer, paths: Iterable[Path], section: Section = contextlib.nullcontext
    ) -> Iterator[Row]:
        """Write each path's row, then place its file, yielding rows as they are written.

        Each row and its placement run inside one `section()` (the CLI's holds stop signals
        until it ends), so an interrupt never leaves a row without its file or the reverse.
        """
        for row in self.rows(paths):
            with section():
                writer.write(row)
                self.place(row)
            yield row

    def place(self, row: Row | RecordedRow) -> None:
        """Put the row's file in its label folder; only after the row is safely written."""
        if self.sorter is not None:
            self.sorter.apply(row.path, row.destination)
