"""The numbers a calibration puts into scoring, checked in one place for a calibration file and
for a Calibrated built in Python: JSON numbers (never a string or a boolean), finite, and within
the ranges `evaluate --calibrate` fits them in, so that every score stays a finite number."""

from __future__ import annotations

import json
from collections.abc import Sequence

from clipcls.pathtext import clean_text

# The temperature fewshot.calibration.fit_temperature searches: from a softmax 100 times
# sharper (nearly argmax) to one 100 times flatter (nearly uniform). 1e-300 made every
# logit infinite and every probability NaN.
TEMPERATURES = (0.01, 100.0)
# A logistic's slope and intercept on the cosine. The fit's ridge (multilabel.logistic.RIDGE,
# 1e-3) keeps a slope within 1000 per image it was fitted on, so 1e9 passes a fit on a million
# images, and slope x cosine + intercept stays far from float64's overflow.
LOGISTIC_LIMIT = 1e9
PROBABILITIES = (0.0, 1.0)  # thresholds, target precisions, calibration errors


class BadNumber(ValueError):
    """A calibration number that is not a number, or outside its range; says which field."""


def number(value: object, field: str, bounds: tuple[float, float]) -> float:
    """value as a float if it is a JSON number (int or float, not a bool) within bounds
    (inclusive); BadNumber naming the field and the range otherwise. NaN and the infinities
    lie outside every range."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        shown = _as_json(value)
        raise BadNumber(f"{field} is {shown}, not a number from {low:g} to {high:g}")
    return float(value)


def check_temperature(value: object) -> float:
    """A softmax temperature (BadNumber outside TEMPERATURES)."""
    return number(value, "temperature", TEMPERATURES)


def check_logistic(values: object, field: str, count: int) -> list[float]:
    """count slopes or intercepts of a per-label logistic (BadNumber naming the field and the
    first bad one, or the wrong count)."""
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != count:
        raise BadNumber(f"{field} must be a list of one finite number per label ({count})")
    limit = (-LOGISTIC_LIMIT, LOGISTIC_LIMIT)
    return [number(value, f"{field}[{i}]", limit) for i, value in enumerate(values)]


def _as_json(value: object) -> str:
    """value as the file spells it (true, "1.0", NaN), cut to 40 characters."""
    try:
        shown = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # not from a JSON file: a Calibrated built in Python
        shown = repr(value)
    shown = clean_text(shown)
    return shown if len(shown) <= 40 else shown[:37] + "..."
