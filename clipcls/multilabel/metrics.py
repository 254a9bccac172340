"""Multi-label metrics as scikit-learn defines them, computed with numpy: average precision
(precision_recall_curve's step-wise sum, ties grouped), mAP, and precision, recall and F1 of
every label at or above a threshold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Counts:
    """Precision, recall and F1 at a threshold (None where undefined, as sklearn's NaN)."""

    precision: float | None
    recall: float | None
    f1: float | None


@dataclass(frozen=True)
class LabelMetrics:
    """One label's average precision, its counts at the threshold, and its positive images."""

    ap: float
    at_threshold: Counts
    positives: int


@dataclass(frozen=True)
class MultiLabelMetrics:
    """Everything `evaluate --multi-label` reports for one setup."""

    mean_ap: float  # mAP, macro: the mean AP over the labels (sklearn's average="macro")
    micro_ap: float  # every (image, label) pair as one binary problem
    micro: Counts
    macro: Counts  # the mean over the labels where each is defined
    per_label: tuple[LabelMetrics, ...]
    thresholds: tuple[float, ...]  # per label, where the counts are taken

    @property
    def without_positives(self) -> list[int]:
        """Labels no image has: their AP is 0, as sklearn's (and sklearn warns)."""
        return [i for i, label in enumerate(self.per_label) if label.positives == 0]


def precision_recall_curve(
    truth: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's precision_recall_curve (drop_intermediate=False): (precision, recall,
    thresholds), thresholds increasing, precision and recall ending with 1 and 0. A label with
    no positive image gets recall 1 at every threshold, as sklearn sets it."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    ranked, hits = scores[order], truth[order].astype(np.float64)
    # the last image of each run of equal scores: a threshold takes all of a tie or none
    cuts = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    tps = np.cumsum(hits)[cuts]
    fps = 1 + cuts - tps
    precision = np.zeros_like(tps)
    np.divide(tps, tps + fps, out=precision, where=(tps + fps) != 0)
    recall = np.ones_like(tps) if tps[-1] == 0 else tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], ranked[cuts][::-1]


def average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    """sklearn's average_precision_score: sum over the thresholds of (recall step) x
    precision, from the highest threshold down."""
    precision, recall, _ = precision_recall_curve(truth, scores)
    return max(0.0, float(-np.sum(np.diff(recall) * precision[:-1])))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (sklearn's zero_division=nan)."""
    out = np.full(np.shape(numerator), np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _value(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _mean(values: np.ndarray) -> float | None:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else None


def _counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """(3, n): precision, recall and F1 rows from true and false positives and negatives."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    return np.stack([_ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)])


def multilabel_metrics(
    truth: np.ndarray, scores: np.ndarray, thresholds: float | Sequence[float] = 0.5
) -> MultiLabelMetrics:
    """Metrics for truth (n_images, n_labels) of 0/1 and scores of the same shape (at least
    one image); a label is predicted where its score is at or above its threshold (one for
    all, or one each)."""
    n_labels = truth.shape[1]
    cut = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (n_labels,))
    truth = truth.astype(bool)
    predicted = scores >= cut
    tp = (predicted & truth).sum(axis=0)
    fp = (predicted & ~truth).sum(axis=0)
    fn = (~predicted & truth).sum(axis=0)
    per = _counts(tp, fp, fn)
    aps = [average_precision(truth[:, j], scores[:, j]) for j in range(n_labels)]
    per_label = tuple(
        LabelMetrics(aps[j], Counts(*(_value(x) for x in per[:, j])), int(truth[:, j].sum()))
        for j in range(n_labels)
    )
    total = _counts(tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True))
    return MultiLabelMetrics(
        mean_ap=float(np.mean(aps)),
        micro_ap=average_precision(truth.ravel(), scores.ravel()),
        micro=Counts(*(_value(x) for x in total[:, 0])),
        macro=Counts(*(_mean(row) for row in per)),
        per_label=per_label,
        thresholds=tuple(float(t) for t in cut),
    )


def best_f1_threshold(truth: np.ndarray, scores: np.ndarray) -> float | None:
    """The score at or above which the label's F1 is highest on these images (the highest
    such score on a tie); None for a label no image has."""
    if not truth.any():
        return None
    precision, recall, cuts = precision_recall_curve(truth, scores)
    f1 = _ratio(2 * precision[:-1] * recall[:-1], precision[:-1] + recall[:-1])
    f1 = np.nan_to_num(f1, nan=-1.0)
    best = np.flatnonzero(f1 == f1.max())[-1]  # cuts increase: the last is the highest
    return float(cuts[best])


def precision_threshold(truth: np.ndarray, scores: np.ndarray, target: float) -> float | None:
    """The lowest score at or above which the label's precision reaches target on these
    images (the most recall that target allows); None where no threshold reaches it."""
    if not truth.any():
        return None
    precision, _, cuts = precision_recall_curve(truth, scores)
    reached = np.flatnonzero(precision[:-1] >= target)
    return float(cuts[reached[0]]) if len(reached) else None
