"""Calibrated confidence: a temperature fitted to labeled images (minimum log-loss), per-label
thresholds that reach a target precision, the expected calibration error, and the JSON file
that carries them to predict and label runs."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from clipcls.errors import UsageError
from clipcls.output.files import temporary_beside
from clipcls.pathtext import clean_text
from clipcls.prompts import TemplateSet
from clipcls.scoring.calibrated import (
    PROBABILITIES,
    TEMPERATURES,
    check_logistic,
    check_temperature,
    number,
)

FORMAT = "clipcls-calibration/1"
BINS = 15  # reliability bins, as in Guo et al. 2017


def log_loss(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the targets under softmax(logits / temperature)."""
    scaled = logits.astype(np.float64) / temperature
    shifted = scaled - scaled.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return float((log_norm - shifted[np.arange(len(targets)), targets]).mean())


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature in TEMPERATURES (0.01 to 100) minimizing the log-loss: golden-section
    search on its log (the loss is smooth and, in log T, unimodal for softmax logits)."""
    low, high = (math.log(bound) for bound in TEMPERATURES)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if log_loss(logits, targets, math.exp(a)) <= log_loss(logits, targets, math.exp(b)):
            high = b
        else:
            low = a
    return round(math.exp((low + high) / 2), 6)


def class_thresholds(
    probabilities: np.ndarray, targets: np.ndarray, labels: Sequence[str], precision: float
) -> dict[str, float | None]:
    """Per label: the lowest top-1 probability at which the images predicted as that label are
    right at least `precision` of the time (None where no threshold reaches it)."""
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    found: dict[str, float | None] = {}
    for index, name in enumerate(labels):
        mine = predicted == index
        order = np.argsort(-confidence[mine], kind="stable")
        scores, right = confidence[mine][order], (targets[mine] == index)[order]
        # precision of the k most confident: right[:k].mean(); the largest k that reaches the
        # target sets the threshold at that image's probability
        reached = np.nonzero(np.cumsum(right) / np.arange(1, len(right) + 1) >= precision)[0]
        found[name] = round(float(scores[reached[-1]]), 6) if len(reached) else None
    return found


@dataclass(frozen=True)
class Reliability:
    """Confidence against accuracy in equal-width bins, and the expected calibration error."""

    ece: float
    bins: tuple[tuple[float, float, float, int], ...]  # (low, confidence, accuracy, count)


def reliability(probabilities: np.ndarray, targets: np.ndarray, bins: int = BINS) -> Reliability:
    """ECE: the count-weighted mean |accuracy - confidence| over the bins of top-1 confidence."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows, ece = [], 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if low == 0.0:
            inside |= confidence == 0.0
        if inside.any():
            mean_conf, accuracy = float(confidence[inside].mean()), float(correct[inside].mean())
            ece += inside.mean() * abs(accuracy - mean_conf)
            rows.append((float(low), mean_conf, accuracy, int(inside.sum())))
    return Reliability(round(float(ece), 6), tuple(rows))


def templates_identity(templates: TemplateSet) -> str:
    """`NAME:digest` of a template set: an edited file of the same name is another set."""
    digest = hashlib.sha256("\n".join(templates.templates).encode()).hexdigest()[:16]
    return f"{templates.name}:{digest}"


def model_identity(model_id: str, weights: str | None) -> str:
    """What a calibration is fitted for: the weights' identity (a file's digest), else the
    model's name."""
    return weights or model_id


@dataclass(frozen=True)
class Calibration:
    """What `evaluate --calibrate` fitted, and for which setup."""

    model: str  # the model identity (weights digest for files)
    labels: tuple[str, ...]
    templates: str  # the template set's name and digest
    temperature: float
    thresholds: Mapping[str, float | None] = field(default_factory=dict)
    target_precision: float | None = None
    support: str | None = None  # the support set's identity, where it was fitted with one
    ece_before: float | None = None
    ece_after: float | None = None
    # `evaluate --multi-label --calibrate`: a logistic per label on the cosine and each label's
    # threshold, {"slopes": [...], "intercepts": [...], "thresholds": {label: P or null}},
    # the lists in the order of `labels`
    multi_label: Mapping[str, Any] | None = None

    def check(self, model: str, labels: Sequence[str], templates: str, support: str | None) -> None:
        """UsageError naming the first difference from the run's setup."""
        for what, mine, theirs in (
            ("model", self.model, model),
            ("labels", sorted(self.labels), sorted(labels)),  # in any order: scores are per name
            ("templates", self.templates, templates),
            ("support set", self.support, support),
        ):
            if mine != theirs:
                raise UsageError(
                    f"calibration file was fitted for {what} {clean_text(str(mine))}, "
                    f"this run has {clean_text(str(theirs))}: fit one with evaluate --calibrate"
                )

    def write(self, path: Path) -> None:
        """Write the file (JSON), replacing it whole."""
        record = {"format": FORMAT, **asdict(self), "labels": list(self.labels)}
        if self.multi_label is None:  # a softmax calibration reads as it did before
            del record["multi_label"]
        fd, temporary = temporary_beside(path)  # never a name planted there, followed
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
            temporary.replace(path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


def read_calibration(path: Path) -> Calibration:
    """Read a calibration file; anything else is a UsageError saying what is wrong."""
    if path.exists() and not path.is_file():  # a FIFO or a device would block or never end
        raise UsageError(f"calibration file {path} is not a regular file")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"cannot read calibration file {path}: {error}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise UsageError(f"{path} is not a clipcls calibration file (no format {FORMAT!r})")
    try:
        record.pop("format")
        calibration = Calibration(**{**record, "labels": _names(record["labels"])})
        calibration = replace(calibration, temperature=check_temperature(calibration.temperature))
        _check_numbers(calibration)
        _check_thresholds(calibration)
        _check_multi_label(calibration)
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(f"{path} is a damaged calibration file: {error}") from None
    return calibration


def _names(labels: object) -> tuple[str, ...]:
    if not isinstance(labels, list) or not all(isinstance(name, str) for name in labels):
        raise ValueError("labels must be a list of label names")
    return tuple(labels)


def _check_numbers(calibration: Calibration) -> None:
    """BadNumber unless the target precision and the calibration errors are null or 0-1:
    nothing scores with them, but reports print them."""
    for name in ("target_precision", "ece_before", "ece_after"):
        value = getattr(calibration, name)
        if value is not None:
            number(value, name, PROBABILITIES)


def _check_thresholds(calibration: Calibration) -> None:
    """ValueError unless each threshold names a label and is null or a probability: a NaN
    would let every answer through, a string fail mid-run."""
    if not isinstance(calibration.thresholds, dict):
        raise ValueError("thresholds must be an object of label: probability or null")
    for name, value in calibration.thresholds.items():
        if name not in calibration.labels:
            raise ValueError(f"threshold for {clean_text(str(name))}, which is not a label")
        if value is not None:
            number(value, f"threshold of {clean_text(name)}", PROBABILITIES)


def _check_multi_label(calibration: Calibration) -> None:
    """ValueError unless the multi-label part has a finite slope and intercept per label and
    a threshold (null or 0-1) per label name."""
    found = calibration.multi_label
    if found is None:
        return
    if not isinstance(found, dict) or set(found) != {"slopes", "intercepts", "thresholds"}:
        raise ValueError("multi_label must hold exactly slopes, intercepts and thresholds")
    for key in ("slopes", "intercepts"):  # the numbers Calibrated checks again in scoring
        check_logistic(found[key], f"multi_label {key}", len(calibration.labels))
    _check_thresholds(replace(calibration, thresholds=found["thresholds"]))
    missing = [name for name in calibration.labels if name not in found["thresholds"]]
    if missing:  # a label without one would silently never apply
        raise ValueError(f"multi_label thresholds has none for {clean_text(missing[0])}")
