"""Classification metrics defined as scikit-learn defines them, computed with numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassMetrics:
    """One class's precision, recall and F1 (None where undefined) and its number of images."""

    precision: float | None
    recall: float | None
    f1: float | None
    support: int


@dataclass(frozen=True)
class Metrics:
    """Everything `evaluate` reports for one setup."""

    top1: float | None
    top_k: dict[int, float | None]  # k -> top-k accuracy, None when there are fewer than k classes
    balanced_accuracy: float | None
    macro_precision: float | None
    macro_recall: float | None
    macro_f1: float | None
    per_class: tuple[ClassMetrics, ...]
    confusion_matrix: np.ndarray  # (n_classes, n_classes): rows true class, columns predicted


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of (true, predicted) pairs, in class order."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (sklearn's zero_division=nan)."""
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _mean(values: np.ndarray) -> float | None:
    """Mean over the defined values; None if none is defined (NaNs are left out, as sklearn)."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else None


def _value(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def top_k_accuracy(y_true: np.ndarray, ranked: np.ndarray, k: int, n_classes: int) -> float | None:
    """Share of images whose true class is among the k best; None with fewer than k classes.

    ranked: (n_images, n_classes) class indices, best first.
    """
    if k > n_classes or len(y_true) == 0:
        return None
    hits = (ranked[:, :k] == y_true[:, None]).any(axis=1)
    return float(hits.mean())


def compute_metrics(
    y_true: np.ndarray, scores: np.ndarray, n_classes: int, ks: tuple[int, ...] = (5,)
) -> Metrics:
    """Metrics for images with true class y_true (n,) and class scores (n, n_classes)."""
    ranked = np.argsort(-scores, axis=1, kind="stable") if len(y_true) else np.zeros((0, 0), int)
    y_pred = ranked[:, 0] if len(y_true) else np.zeros(0, dtype=np.int64)
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = _ratio(tp, predicted.astype(np.float64))
    recall = _ratio(tp, support.astype(np.float64))
    f1 = _ratio(2 * tp, (support + predicted).astype(np.float64))
    per_class = tuple(
        ClassMetrics(_value(p), _value(r), _value(f), int(s))
        for p, r, f, s in zip(precision, recall, f1, support, strict=True)
    )
    return Metrics(
        top1=top_k_accuracy(y_true, ranked, 1, n_classes),
        top_k={k: top_k_accuracy(y_true, ranked, k, n_classes) for k in ks},
        # sklearn's balanced accuracy: mean recall over the classes that have images.
        balanced_accuracy=_mean(recall),
        macro_precision=_mean(precision),
        macro_recall=_mean(recall),
        macro_f1=_mean(f1),
        per_class=per_class,
        confusion_matrix=matrix,
    )
