"""`evaluate --multi-label --calibrate`: a logistic per label on the cosine, fitted to the CSV's
truth, and per-label thresholds on the probabilities a run would then give, written into the
calibration file's `multi_label` part for predict and label runs."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from clipcls.errors import ClipclsError
from clipcls.evaluation.multilabel import MultiLabelEvaluation
from clipcls.fewshot.calibration import Calibration, templates_identity
from clipcls.multilabel.logistic import fit_logistic
from clipcls.multilabel.metrics import best_f1_threshold, precision_threshold
from clipcls.scoring.heads import LOGISTIC, SIGMOID, LogisticHead

EPSILON = 1e-12  # keeps log(0) out of the log-loss of a probability of exactly 0 or 1


@dataclass(frozen=True)
class FittedMultiLabel:
    """What --calibrate fitted, and its effect on these images."""

    calibration: Calibration
    method: str  # the head a calibrated run uses: logistic, or the model's own sigmoid
    log_loss_before: float
    log_loss_after: float
    thresholds: dict[str, float | None]  # as the file holds them

    @property
    def reached(self) -> int:
        """How many labels got a threshold."""
        return sum(value is not None for value in self.thresholds.values())


def binary_log_loss(truth: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean negative log-likelihood of every (image, label) answer."""
    p = np.clip(probabilities.astype(np.float64), EPSILON, 1 - EPSILON)
    return float(-np.mean(np.where(truth, np.log(p), np.log1p(-p))))


def fit_multilabel(
    evaluation: MultiLabelEvaluation, precision: float | None = None
) -> FittedMultiLabel:
    """A logistic per label on the cosine; thresholds (per label: the lowest reaching
    `precision`, or the F1-best where it is None) on the probabilities a calibrated run gives:
    the logistic's, or the model's own sigmoid, which a calibration never replaces."""
    truth, cosines = evaluation.truth, evaluation.similarities
    if not len(truth):
        raise ClipclsError("no readable image to fit a calibration on")
    slopes, intercepts = fit_logistic(cosines, truth)
    method = SIGMOID if evaluation.method == SIGMOID else LOGISTIC
    after = evaluation.probabilities
    if method == LOGISTIC:
        head = LogisticHead(slopes=slopes, intercepts=intercepts)
        after = head.probabilities(cosines, cosines, np.zeros((len(truth), 0)))
    thresholds: dict[str, float | None] = {}
    for j, name in enumerate(evaluation.names):
        found = (
            best_f1_threshold(truth[:, j], after[:, j])
            if precision is None
            else precision_threshold(truth[:, j], after[:, j], precision)
        )
        thresholds[name] = found  # unrounded: a rounded one may pass the image that set it
    calibration = Calibration(
        model=evaluation.identity,
        labels=tuple(evaluation.names),
        templates=templates_identity(evaluation.templates),
        temperature=1.0,  # softmax answers are left as they are
        target_precision=precision,
        multi_label={
            # unrounded too: the thresholds are cut on the probabilities these exact ones give
            "slopes": [float(v) for v in slopes],
            "intercepts": [float(v) for v in intercepts],
            "thresholds": thresholds,
        },
    )
    before = binary_log_loss(truth, evaluation.probabilities)
    after_loss = binary_log_loss(truth, after)
    return FittedMultiLabel(calibration, method, before, after_loss, thresholds)


def calibrated_multilabel(
    evaluation: MultiLabelEvaluation, precision: float | None = None
) -> MultiLabelEvaluation:
    """The evaluation with its fitted calibration attached (its metrics unchanged)."""
    return replace(evaluation, calibrated=fit_multilabel(evaluation, precision))
