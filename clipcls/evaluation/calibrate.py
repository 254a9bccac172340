"""`evaluate --calibrate`, for predict and label runs: for a softmax head, a temperature and
per-label thresholds fitted on the evaluated images' logits (with the support set, where one is
given); for an independent head, a logistic per label on the cosine and per-label thresholds,
written into the calibration file's `multi_label` part."""

from __future__ import annotations

import numpy as np

from clipcls.errors import ClipclsError
from clipcls.evaluation.results import Evaluation, FittedMultiLabel, MultiLabelEvaluation
from clipcls.fewshot.calibration import (
    Calibration,
    class_thresholds,
    fit_temperature,
    reliability,
    templates_identity,
)
from clipcls.multilabel.logistic import fit_logistic
from clipcls.multilabel.metrics import best_f1_threshold, precision_threshold
from clipcls.scoring.heads import LOGISTIC, SIGMOID, LogisticHead, softmax

DEFAULT_PRECISION = 0.95
EPSILON = 1e-12  # keeps log(0) out of the log-loss of a probability of exactly 0 or 1


def fit_calibration(
    evaluation: Evaluation, precision: float = DEFAULT_PRECISION, support: str | None = None
) -> Calibration:
    """The temperature of least log-loss, each label's threshold at the target precision on
    the calibrated probabilities, and the calibration error before and after.

    Args:
        support: the support set's identity where the evaluation scored with one.
    """
    logits, targets = evaluation.logits, evaluation.data.targets
    if logits is None or not len(targets):
        raise ClipclsError("no readable image to fit a calibration on")
    temperature = fit_temperature(logits, targets)
    calibrated = softmax(logits / temperature)
    names = tuple(label.name for label in evaluation.labels)
    return Calibration(
        model=evaluation.identity or evaluation.model_id,
        labels=names,
        templates=templates_identity(evaluation.templates),
        temperature=temperature,
        thresholds=class_thresholds(calibrated, targets, names, precision),
        target_precision=precision,
        support=support,
        ece_before=reliability(softmax(logits), targets).ece,
        ece_after=reliability(calibrated, targets).ece,
    )


def reached(calibration: Calibration) -> int:
    """How many labels have a threshold that reaches the target precision."""
    return sum(value is not None for value in calibration.thresholds.values())


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
        model=evaluation.identity or evaluation.model_id,
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
