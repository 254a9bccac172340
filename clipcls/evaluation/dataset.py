"""An evaluation dataset: one folder of images per class, their texts, and their embeddings."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipcls.errors import UsageError
from clipcls.gathered import Embedded
from clipcls.images import iter_image_paths
from clipcls.labels import Label, read_labels_file


@dataclass(frozen=True)
class Dataset:
    """Images with their true class: classes are the sorted immediate subfolders."""

    root: Path
    classes: tuple[str, ...]
    paths: tuple[Path, ...]
    targets: tuple[int, ...]  # class index of each path


def _class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise UsageError(f"dataset folder does not exist or is not a folder: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UsageError(f"{root} has no class folders: expected {root}/<class>/<image>")
    return folders


def load_dataset(
    root: Path, max_per_class: int | None = None, seed: int = 0, include_hidden: bool = False
) -> Dataset:
    """Find the classes and their images (recursively), optionally N random images per class."""
    folders = _class_folders(root)
    rng = random.Random(seed)
    paths: list[Path] = []
    targets: list[int] = []
    for index, folder in enumerate(folders):
        found = list(iter_image_paths([str(folder)], include_hidden))
        if max_per_class is not None and len(found) > max_per_class:
            found = sorted(rng.sample(found, max_per_class))
        paths.extend(found)
        targets.extend([index] * len(found))
    if not paths:
        raise UsageError(f"no images found in the class folders of {root}")
    return Dataset(root, tuple(f.name for f in folders), tuple(paths), tuple(targets))


def folder_text(folder: str) -> str:
    """The text for a class folder: `golden_retriever` and `golden-retriever` read as words."""
    return " ".join(folder.replace("_", " ").replace("-", " ").split())


def class_labels(classes: Sequence[str], classnames: Path | None = None) -> tuple[Label, ...]:
    """One label per class folder, its texts from the folder name or a classnames file."""
    given = (
        {label.name: label.texts for label in read_labels_file(classnames)} if classnames else {}
    )
    unknown = sorted(set(given) - set(classes))
    if unknown:
        raise UsageError(f"{classnames} names folders that do not exist: {', '.join(unknown)}")
    return tuple(Label(c, given.get(c, (folder_text(c),))) for c in classes)


@dataclass
class EmbeddedDataset:
    """Image embeddings of a dataset for one model; unreadable files are kept, not dropped."""

    embeddings: np.ndarray  # (n_readable, dim)
    targets: np.ndarray  # (n_readable,)
    paths: list[str]
    failures: list[tuple[str, int, str]] = field(default_factory=list)  # path, class, error


def embedded_dataset(dataset: Dataset, found: Embedded) -> EmbeddedDataset:
    """An EmbeddedDataset in the dataset's order, from its paths as a backend's embed_matrix
    gathered them (found.failures in input order: each is the next path not in found.rows)."""
    targets = np.asarray(dataset.targets, dtype=np.int64)
    readable = set(found.rows)
    unread = [index for index in range(len(dataset.paths)) if index not in readable]
    failures = [
        (path, int(targets[index]), error)
        for index, (path, error) in zip(unread, found.failures, strict=True)
    ]
    return EmbeddedDataset(found.matrix, targets[list(found.rows)], list(found.readable), failures)
