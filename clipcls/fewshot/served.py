"""A server's support set: embedded once at start with every folder name kept as a label name,
then matched to each request's labels (examples of labels a request lacks are not used)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipcls.fewshot.support import (
    _key,
    _label_folders,
    embed_support,
    find_support,
)
from clipcls.labels import Label
from clipcls.prediction import Prediction
from clipcls.scoring.adapter import SupportSet


def _silent(text: str) -> None:
    return None


@dataclass(frozen=True)
class ServedSupport:
    """Every example of the folder, its label being its folder's name."""

    embedded: SupportSet

    def for_labels(self, labels: Sequence[Label]) -> SupportSet | None:
        """The examples of the request's labels, indexed by them (None: no label has any)."""
        index = {_key(label.name): i for i, label in enumerate(labels)}
        names = self.embedded.labels
        rows = [r for r, t in enumerate(self.embedded.targets) if _key(names[t]) in index]
        if not rows:
            return None
        targets = np.array([index[_key(names[self.embedded.targets[r]])] for r in rows])
        paths = tuple(self.embedded.paths[r] for r in rows)
        run_labels = tuple(label.name for label in labels)
        # no request image is an example by path: uploads and URLs name no file of the folder
        return SupportSet(
            self.embedded.keys[rows], targets, paths, run_labels, self.embedded.identity, {}
        )

    def facts(self) -> dict[str, object]:
        """What the server says of it in /v1/info."""
        return {"identity": self.embedded.identity, "examples": self.embedded.counts()}


def folder_labels(folder: Path) -> list[Label]:
    """The support folder's label names: its folders' names (UsageError if it has none)."""
    return [Label.plain(sub.name) for sub in _label_folders(folder)]


def served_support(
    folder: Path,
    embed_images: Callable[[Iterable[Path | str]], Iterator[Prediction]],
    warn: Callable[[str], None] = _silent,
) -> ServedSupport:
    """Embed every example under folder/<name>/ (unreadable ones: warned and skipped)."""
    files = find_support(folder, folder_labels(folder))
    for line in files.notes():
        warn(line)
    return ServedSupport(embed_support(files, embed_images, warn))
