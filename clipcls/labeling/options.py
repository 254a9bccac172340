"""What a label run is asked to do: its options, the checks made before anything is written,
and the setup recorded beside the output and compared on --resume."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from clipcls.errors import UsageError
from clipcls.labeling.manifest import RunSetup
from clipcls.labeling.sorting import SortMode, first_on_another_device, safe_folder_name
from clipcls.labels import Label
from clipcls.output.formats import Format
from clipcls.output.rows import (
    DEFAULT_UNKNOWN,
    MULTI_THRESHOLD,
    SEPARATOR,
    Columns,
    Threshold,
    clean_text,
)
from clipcls.pathtext import path_to_text
from clipcls.prompts import TemplateSet


@dataclass(frozen=True)
class LabelOptions:
    """How predictions become rows, and whether files are sorted into label folders."""

    top_k: int = 1
    # P for every label; "auto": each label's own from the run's calibration file (resolved
    # into a mapping of label name -> P, or None where that label is always unknown)
    threshold: Threshold | str | None = None
    unknown_label: str = DEFAULT_UNKNOWN
    sort_into: Path | None = None
    mode: SortMode = SortMode.COPY
    dry_run: bool = False
    save_embeddings: bool = False
    # every label at or above the threshold (MULTI_THRESHOLD unless given), each with its own
    # probability; a row no label reaches gets unknown_label, or none where it is ""
    multi_label: bool = False

    def row_threshold(self) -> Threshold | None:
        """The threshold rows are cut at; "auto" must have been resolved by then."""
        if isinstance(self.threshold, str):
            raise UsageError("--threshold auto needs --calibration FILE.json: it holds them")
        return self.threshold

    def columns(self, labels: Sequence[Label]) -> Columns:
        """The output's columns for these options and labels."""
        destination = ""
        if self.sort_into is not None:
            destination = "planned_destination" if self.dry_run else "destination"
        if self.multi_label:
            names = tuple(label.name for label in labels)
            return Columns(1, False, True, destination, self.save_embeddings, names)
        return Columns(
            top_k=min(self.top_k, len(labels)),
            best_label=self.threshold is not None,
            model=True,
            destination=destination,
            embedding=self.save_embeddings,
        )


def multi_label_options(options: LabelOptions, labels: Sequence[Label]) -> LabelOptions:
    """Refuse what --multi-label cannot do (UsageError, before anything is written), and give
    the default threshold where none is set; options as they are in a single-label run."""
    if not options.multi_label:
        return options
    check_multi_label(labels, options.mode if options.sort_into is not None else None)
    where = options.sort_into
    if where is not None and SEPARATOR in str(where):
        raise UsageError(
            f"--sort-into {clean_text(str(where))} holds {SEPARATOR!r}, which separates a "
            "multi-label row's destinations: name another folder"
        )
    if where is not None:
        check_shared_folders(labels)
    if options.threshold is None:
        return replace(options, threshold=MULTI_THRESHOLD)
    return options


def check_shared_folders(labels: Sequence[Label]) -> None:
    """UsageError for two labels whose folders under --sort-into are one (`a/b` and `a_b`; in
    any case, for macOS and Windows): a file of both would be placed there once, listed twice."""
    seen: dict[str, str] = {}
    for label in labels:
        folder = safe_folder_name(label.name)
        first = seen.setdefault(folder.casefold(), label.name)
        if first != label.name:
            raise UsageError(
                f"labels {clean_text(first)!r} and {clean_text(label.name)!r} would share the "
                f"folder {clean_text(folder)!r} under --sort-into: rename one"
            )


def check_multi_label(labels: Sequence[Label], mode: SortMode | None = None) -> None:
    """UsageError for a label holding the separator of a row's labels, or a move (one file
    cannot be in several folders)."""
    for label in labels:
        if SEPARATOR in label.name:
            raise UsageError(
                f"label {clean_text(label.name)!r} holds {SEPARATOR!r}, which separates a "
                "multi-label row's labels: rename it"
            )
    if mode is SortMode.MOVE:
        raise UsageError(
            "--multi-label with --mode move: one file cannot move into several folders: "
            "use copy, symlink or hardlink"
        )


def check_unknown_label(
    unknown_label: str | None,
    threshold: object,
    labels: tuple[Label, ...],
    multi_label: bool = False,
) -> str:
    """The unknown label, refused where it would be ignored or merge into a real label
    (multi-label: "" unless given, so that a row no label reaches has none)."""
    if unknown_label is None:
        return "" if multi_label else DEFAULT_UNKNOWN
    if threshold is None and not multi_label:  # multi-label runs always have one
        raise UsageError("--unknown-label needs --threshold P: no image gets it otherwise")
    unknown_label = clean_text(unknown_label)  # a name in the rows, as a Label's name is
    if multi_label and SEPARATOR in unknown_label:
        raise UsageError(f"--unknown-label {unknown_label!r} holds {SEPARATOR!r}: rename it")
    same = unicodedata.normalize("NFC", unknown_label).casefold()
    if any(label.name.casefold() == same for label in labels):
        raise UsageError(
            f"--unknown-label {unknown_label!r} is one of the labels: give a name of its own"
        )
    return unknown_label


def check_file_format(kind: Format, resume: bool, save_embeddings: bool) -> None:
    """Refuse what a format cannot do: resume Parquet, or hold embeddings in CSV."""
    if resume and not kind.resumable:
        raise UsageError(
            f"a {kind.name} output cannot be resumed (its footer is written at the end): "
            "use -o FILE.csv or FILE.jsonl for a resumable run"
        )
    if save_embeddings and not kind.holds_embeddings:
        raise UsageError(
            f"--save-embeddings needs -o FILE.jsonl or FILE.parquet, not {kind.name.upper()}"
        )


def check_sorting(kind: Format, options: LabelOptions, inputs: list[str]) -> None:
    """Refuse, before anything is written, sorting that a kill or the file systems would break:
    a move into Parquet (whose rows exist only once its footer is written, so a kill would leave
    moved files with no row anywhere) and hard links across file systems."""
    if options.sort_into is None or options.dry_run:
        return
    if not kind.resumable and options.mode is SortMode.MOVE:
        raise UsageError(
            f"--mode move cannot write -o FILE.{kind.name}: a kill would leave moved files whose "
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


def _recorded(threshold: Threshold | str | None) -> float | str | tuple[Any, ...] | None:
    """A threshold as the setup record holds it: P, "auto", or (label, P) pairs."""
    if isinstance(threshold, Mapping):
        return tuple(sorted(threshold.items()))
    return threshold


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
        format=kind.name,
        columns=tuple(options.columns(labels).header()),
        labels=RunSetup.label_texts(labels),
        templates=templates.templates,
        top_k=options.top_k,
        threshold=_recorded(options.threshold),
        unknown_label=options.unknown_label if options.threshold is not None else None,
        sort_into=None if sort_into is None else path_to_text(os.path.realpath(sort_into)),
        mode=None if sort_into is None else options.mode.value,
        model_key=model_key,
        cwd=path_to_text(os.getcwd()),
        multi_label=options.multi_label,
    )
