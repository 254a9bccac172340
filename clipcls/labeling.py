"""Batch labeling: stream rows for a directory tree, skip what a resumed file holds, sort files."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from clipcls.classify import Classifier
from clipcls.errors import ClipclsError
from clipcls.outputs import RecordedRow, Recovered
from clipcls.rows import DEFAULT_UNKNOWN, Columns, Row, clean_text, to_row
from clipcls.sorting import SortMode, is_placed, place, safe_folder_name, unique_destination


@dataclass(frozen=True)
class LabelOptions:
    """How predictions become rows, and whether files are sorted into label folders."""

    top_k: int = 1
    threshold: float | None = None
    unknown_label: str = DEFAULT_UNKNOWN
    sort_into: Path | None = None
    mode: SortMode = SortMode.COPY
    dry_run: bool = False

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
        )


class Sorter:
    """Choose each file's place under DIR/<label>/ and put it there after its row is saved."""

    def __init__(self, root: Path, mode: SortMode, dry_run: bool) -> None:
        self.root, self.mode, self.dry_run = root, mode, dry_run
        # A dry run creates nothing on disk, so it must remember the names it has handed out.
        self.planned: set[Path] | None = set() if dry_run else None

    def destination(self, row: Row) -> str:
        """A collision-free path for the row's file in its label folder ("" for errors)."""
        if row.error is not None:
            return ""
        folder = self.root / safe_folder_name(row.label)
        target = unique_destination(folder, Path(row.path).name, self.planned)
        if self.planned is not None:
            self.planned.add(target)
        return str(target)

    def apply(self, path: str, destination: str) -> None:
        """Copy, link or move the file (nothing in a dry run, or if already done)."""
        if self.dry_run or not destination:
            return
        source, target = Path(path), Path(destination)
        if is_placed(source, target, self.mode):
            return
        try:
            place(source, target, self.mode)
        except OSError as error:
            raise ClipclsError(
                f"cannot {self.mode.value} {path} to {destination}: {error.strerror or error}"
            ) from None


@dataclass
class Summary:
    """What a run did, for the end-of-run report."""

    per_label: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    skipped: int = 0  # already in the resumed file
    started: float = field(default_factory=time.monotonic)

    @property
    def processed(self) -> int:
        return sum(self.per_label.values()) + self.failures

    def rate(self) -> float:
        """Images per second in this run."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return self.processed / elapsed


class LabelJob:
    """Turn image paths into rows, one per file, skipping those a resumed file already holds."""

    def __init__(
        self,
        classifier: Classifier,
        options: LabelOptions,
        model_id: str,
        recovered: Recovered | None = None,
    ) -> None:
        self.classifier, self.options, self.model_id = classifier, options, model_id
        self.recovered = recovered or Recovered()
        self.columns = options.columns(len(classifier.labels))
        self.sorter = (
            Sorter(options.sort_into, options.mode, options.dry_run)
            if options.sort_into is not None
            else None
        )
        self.summary = Summary()
        self._check_model()

    def _check_model(self) -> None:
        others = self.recovered.models - {self.model_id}
        if others:
            raise ClipclsError(
                f"the file being resumed was labeled with {', '.join(sorted(others))}, "
                f"not {self.model_id}: resume with the same model, or use --overwrite"
            )

    def is_done(self, path: Path | str) -> bool:
        """Whether the resumed file already has a row for this path."""
        return clean_text(str(path)) in self.recovered.done

    def todo(self, paths: Iterable[Path]) -> Iterator[Path]:
        """The paths still to label, counting the skipped ones."""
        for path in paths:
            if self.is_done(path):
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
        for prediction in self.classifier.classify_paths(self.todo(paths)):
            row = to_row(
                prediction,
                self.columns.top_k,
                options.threshold,
                options.unknown_label,
                self.model_id,
            )
            if self.sorter is not None:
                row = replace(row, destination=self.sorter.destination(row))
            if row.error is None:
                self.summary.per_label[row.label] += 1
            else:
                self.summary.failures += 1
            yield row

    def place(self, row: Row | RecordedRow) -> None:
        """Put the row's file in its label folder; only after the row is safely written."""
        if self.sorter is not None:
            self.sorter.apply(row.path, row.destination)
