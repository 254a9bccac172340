"""`evaluate --calibrate`: a temperature and per-label thresholds fitted on the evaluated
images' logits (with the support set, where one is given), for predict and label runs."""

from __future__ import annotations

from dataclasses import replace

from clipcls.errors import ClipclsError
from clipcls.evaluation.scoring import Evaluation
from clipcls.fewshot.calibration import (
    Calibration,
    class_thresholds,
    fit_temperature,
    reliability,
    templates_identity,
)
from clipcls.scoring.heads import softmax

DEFAULT_PRECISION = 0.95


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


def calibrated(
    evaluation: Evaluation, precision: float = DEFAULT_PRECISION, support: str | None = None
) -> Evaluation:
    """The evaluation with its fitted calibration attached (its metrics unchanged: a
    temperature does not move the top-1)."""
    return replace(evaluation, calibrated=fit_calibration(evaluation, precision, support))


def reached(calibration: Calibration) -> int:
    """How many labels have a threshold that reaches the target precision."""
    return sum(value is not None for value in calibration.thresholds.values())
