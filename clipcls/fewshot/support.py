"""A support set: a few example images per label in DIR/<label>/, checked against the labels,
embedded like any input, and identified (for --resume and calibration files)."""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from clipcls.digests import file_digests
from clipcls.errors import UsageError
from clipcls.gathered import gather
from clipcls.images import iter_image_paths
from clipcls.labels import Label
from clipcls.pathtext import clean_text, path_key
from clipcls.prediction import Prediction
from clipcls.scoring.adapter import SupportSet
from clipcls.settings import ModelSettings


@dataclass(frozen=True)
class SupportFiles:
    """The example images found for a run's labels, and what was missing."""

    folder: Path
    paths: tuple[Path, ...]
    targets: tuple[int, ...]  # index of each path's label in the run's labels
    labels: tuple[str, ...]  # the run's label names, in order
    empty: tuple[str, ...] = ()  # labels whose folder holds no image
    absent: tuple[str, ...] = ()  # labels with no folder

    def identity(self) -> str:
        """`support:<digest>` over each example's label and content: another image, an edited
        one, or another label's folder is another support set; the same images copied to
        another folder or machine (new paths, inodes and times) are the same one."""
        return self._identity

    @cached_property
    def _identity(self) -> str:
        # Digests remembered by file version in the cache folder: a run re-hashes only the
        # examples that changed (1,600 camera photos would be ~6 GB to read every run).
        known = file_digests(self.paths, ModelSettings().resolved_cache_dir())
        entries = sorted(
            [self.labels[target], known.get(str(path), f"unreadable:{path}")]
            for path, target in zip(self.paths, self.targets, strict=True)
        )
        digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()
        return f"support:{digest[:16]}"

    def first_among(self, inputs: Iterable[str]) -> Path | None:
        """The first example that is one of the inputs or lies under an input folder."""
        roots = [os.path.realpath(given) for given in inputs]
        for path in self.paths:
            real = os.path.realpath(path)
            if any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
                return path
        return None

    def notes(self) -> list[str]:
        """One line for each label left with zero-shot scores only."""
        lines = []
        if self.absent:
            names = ", ".join(clean_text(name) for name in self.absent)
            lines.append(f"no support folder for {names}: zero-shot scores only")
        for name in self.empty:
            lines.append(
                f"the support folder of {clean_text(name)} holds no images: zero-shot scores only"
            )
        return lines


def _key(name: str) -> str:
    """A folder's or a label's name as they are matched: as a Label writes it (a byte that is
    not UTF-8 as \\xNN), NFC, in any case."""
    return unicodedata.normalize("NFC", clean_text(name)).casefold()


def _label_folders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UsageError(f"support folder does not exist or is not a folder: {folder}")
    found = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise UsageError(f"{folder} has no label folders: expected {folder}/<label>/<image>")
    return found


def _refuse_twins(folders: Sequence[Path], labels: Sequence[Label]) -> None:
    """UsageError naming two folders that match one label (`cat/` and `Cat/`, or `café/` in
    two Unicode forms): merged, where an example came from is hidden, and a case-insensitive
    disk (or --export-support, one folder per label) cannot hold the same set."""
    names = {_key(label.name): label.name for label in labels}
    seen: dict[str, str] = {}
    for name in (sub.name for sub in folders):
        first = seen.setdefault(_key(name), name)
        if first == name:
            continue
        shown = [clean_text(first), clean_text(name)]
        if unicodedata.normalize("NFC", shown[0]) == unicodedata.normalize("NFC", shown[1]):
            shown = [ascii(first), ascii(name)]  # two Unicode forms, or a byte and its escape
        raise UsageError(
            f"support folders {shown[0]} and {shown[1]} both match label "
            f"{clean_text(names[_key(name)])} (a folder matches its label in any case and "
            "Unicode form): merge them into one"
        )


def find_support(
    folder: Path, labels: Sequence[Label], include_hidden: bool = False
) -> SupportFiles:
    """The example images under folder/<label>/ (walked like an input folder); a folder that
    names no label is a UsageError naming it, as is a support set with no image at all."""
    index = {_key(label.name): i for i, label in enumerate(labels)}
    folders = _label_folders(folder)
    strays = [f.name for f in folders if _key(f.name) not in index]
    if strays:
        names = ", ".join(clean_text(name) for name in strays)
        known = ", ".join(clean_text(label.name) for label in labels)
        raise UsageError(f"support folders that match no label: {names} (labels: {known})")
    _refuse_twins(folders, labels)
    paths: list[Path] = []
    targets: list[int] = []
    empty = []
    for sub in folders:
        found = list(iter_image_paths([str(sub)], include_hidden))
        if not found:
            empty.append(labels[index[_key(sub.name)]].name)
        paths += found
        targets += [index[_key(sub.name)]] * len(found)
    if not paths:
        raise UsageError(f"support folder {folder} holds no images")
    named = {_key(f.name) for f in folders}
    absent = tuple(label.name for label in labels if _key(label.name) not in named)
    run_labels = tuple(label.name for label in labels)
    return SupportFiles(folder, tuple(paths), tuple(targets), run_labels, tuple(empty), absent)


def embed_support(
    files: SupportFiles,
    embed_images: Callable[[Iterable[Path | str]], Iterator[Prediction]],
    warn: Callable[[str], None] = lambda line: None,
) -> SupportSet:
    """Embed the examples (the cache answers for those seen before); an unreadable one is a
    warning and is left out; none readable is a UsageError."""
    found = gather(embed_images(files.paths), files.paths, dtype=np.float32)
    for path, error in found.failures:
        warn(f"support image skipped: {clean_text(path)}: {error or 'unreadable'}")
    if not found.readable:
        raise UsageError(f"no support image in {files.folder} could be read")
    matrix = found.matrix / np.linalg.norm(found.matrix, axis=1, keepdims=True)
    where = {path_key(path): row for row, path in enumerate(found.readable)}
    targets = np.asarray([files.targets[row] for row in found.rows], dtype=np.int64)
    return SupportSet(matrix, targets, found.readable, files.labels, files.identity(), where)
