"""Evaluate zero-shot accuracy on a folder of class folders: dataset, embeddings, reports."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipcls.cache import EmbeddingCache
from clipcls.classify import Classifier
from clipcls.errors import UsageError
from clipcls.images import iter_image_paths
from clipcls.labels import Label, read_labels_file
from clipcls.metrics import Metrics, compute_metrics
from clipcls.pipeline import Encoder, embed_paths
from clipcls.prompts import TemplateSet
from clipcls.settings import model_id


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


def embed_dataset(
    encoder: Encoder,
    dataset: Dataset,
    batch_size: int,
    advance: Callable[[int], None] = lambda n: None,
    cache: EmbeddingCache | None = None,
) -> EmbeddedDataset:
    """Embed every image once; template and label changes then cost no image work."""
    chunks: list[np.ndarray] = []
    targets: list[int] = []
    paths: list[str] = []
    failures: list[tuple[str, int, str]] = []
    position = 0
    for batch in embed_paths(encoder, dataset.paths, batch_size, cache):
        for path, error in zip(batch.paths, batch.errors, strict=True):
            target = dataset.targets[position]
            position += 1
            if error is None:
                paths.append(path)
                targets.append(target)
            else:
                failures.append((path, target, error))
        if len(batch.embeddings):
            chunks.append(batch.embeddings)
        advance(len(batch.paths))
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    return EmbeddedDataset(embeddings, np.asarray(targets, dtype=np.int64), paths, failures)


@dataclass(frozen=True)
class Evaluation:
    """One setup's results: metrics plus what is needed to reproduce and inspect them."""

    model: str
    pretrained: str | None
    templates: TemplateSet
    labels: tuple[Label, ...]
    metrics: Metrics
    probabilities: np.ndarray  # (n_readable, n_classes)
    data: EmbeddedDataset

    @property
    def model_id(self) -> str:
        """The model as `ARCH:TAG` (or its hf-hub:/local-dir: name)."""
        return model_id(self.model, self.pretrained)

    @property
    def name(self) -> str:
        """A short name for comparison tables."""
        return f"{self.model_id} / {self.templates.name}"


def evaluate_embedded(
    encoder: Encoder,
    labels: Sequence[Label],
    templates: TemplateSet,
    data: EmbeddedDataset,
    model: tuple[str, str | None],
    ks: tuple[int, ...] = (5,),
    cache: EmbeddingCache | None = None,
) -> Evaluation:
    """Score ready embeddings against one template set and compute the metrics."""
    classifier = Classifier(encoder, labels, templates, cache=cache)
    n_classes = len(labels)
    if len(data.embeddings):
        probabilities, _ = classifier.score(data.embeddings)
    else:
        probabilities = np.zeros((0, n_classes))
    metrics = compute_metrics(data.targets, probabilities, n_classes, ks)
    return Evaluation(model[0], model[1], templates, tuple(labels), metrics, probabilities, data)


def percent(value: float | None) -> str:
    """A metric for people: 81.3%, or a dash where it is undefined."""
    return "—" if value is None else f"{value:.1%}"


def headline(metrics: Metrics) -> list[tuple[str, float | None]]:
    """The summary metrics in the order every report shows them."""
    return [
        ("top-1 accuracy", metrics.top1),
        *((f"top-{k} accuracy", v) for k, v in sorted(metrics.top_k.items())),
        ("balanced accuracy", metrics.balanced_accuracy),
        ("macro precision", metrics.macro_precision),
        ("macro recall", metrics.macro_recall),
        ("macro F1", metrics.macro_f1),
    ]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def report(evaluation: Evaluation) -> dict[str, Any]:
    """The JSON report: exactly the documented keys (plus topK for extra --top-k values)."""
    metrics = evaluation.metrics
    classes = [label.name for label in evaluation.labels]
    extra = {f"top{k}": _round(v) for k, v in metrics.top_k.items() if k != 5}
    return {
        "top1": _round(metrics.top1),
        "top5": _round(metrics.top_k.get(5)),
        **extra,
        "balanced_accuracy": _round(metrics.balanced_accuracy),
        "macro_precision": _round(metrics.macro_precision),
        "macro_recall": _round(metrics.macro_recall),
        "macro_f1": _round(metrics.macro_f1),
        "n_images": len(evaluation.data.paths),
        "n_failed": len(evaluation.data.failures),
        "classes": classes,
        "per_class": {
            name: {
                "precision": _round(m.precision),
                "recall": _round(m.recall),
                "f1": _round(m.f1),
                "support": m.support,
            }
            for name, m in zip(classes, metrics.per_class, strict=True)
        },
        "confusion_matrix": metrics.confusion_matrix.tolist(),
        "model": evaluation.model,
        "pretrained": evaluation.pretrained,
        "templates": {
            "name": evaluation.templates.name,
            "templates": list(evaluation.templates.templates),
        },
        "classnames": {label.name: list(label.texts) for label in evaluation.labels},
    }


def prediction_rows(evaluation: Evaluation) -> list[list[str]]:
    """Per-image rows: path, true class, predicted class, probability, correct, error."""
    classes = [label.name for label in evaluation.labels]
    rows = []
    best = evaluation.probabilities.argmax(axis=1) if len(evaluation.probabilities) else []
    for i, path in enumerate(evaluation.data.paths):
        true, predicted = int(evaluation.data.targets[i]), int(best[i])
        probability = float(evaluation.probabilities[i, predicted])
        rows.append(
            [
                path,
                classes[true],
                classes[predicted],
                f"{probability:.6f}",
                str(true == predicted).lower(),
                "",
            ]
        )
    for path, target, error in evaluation.data.failures:
        rows.append([path, classes[target], "", "", "", error])
    return rows
