"""A predict or label run's support set and calibration: both read and checked against the
run's labels and templates before anything is written (labeling.predictor scores with them)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from clipcls.errors import UsageError
from clipcls.fewshot.calibration import (
    Calibration,
    read_calibration,
    templates_identity,
)
from clipcls.fewshot.support import SupportFiles, find_support
from clipcls.labels import Label
from clipcls.pathtext import clean_text
from clipcls.prompts import TemplateSet
from clipcls.scoring.spec import SUPPORT_NOT_MULTI_LABEL, Calibrated

AUTO = "auto"  # --threshold auto: each label's threshold from the calibration file

Thresholds = Mapping[str, float | None]


def _silent(text: str) -> None:
    return None


@dataclass(frozen=True)
class FewShot:
    """A run's support set (its files, not yet embedded) and calibration, for its labels and
    templates."""

    labels: tuple[Label, ...]
    templates: TemplateSet
    support: SupportFiles | None = None
    calibration: Calibration | None = None
    calibration_digest: str | None = None  # of the file's bytes
    multi_label: bool = False  # each label's own probability (a scoring head), no softmax

    @property
    def temperature(self) -> float:
        """The calibration's temperature; 1 in multi-label runs (it calibrates a softmax)."""
        if self.calibration is None or self.multi_label:
            return 1.0
        return float(self.calibration.temperature)

    def logistic(self) -> tuple[list[float], list[float]] | None:
        """The calibration's per-label logistic (slopes, intercepts) in the run's label order;
        None where it has none (the model then decides the head)."""
        fitted = self.calibration.multi_label if self.calibration is not None else None
        if fitted is None or self.calibration is None:
            return None
        where = {name: i for i, name in enumerate(self.calibration.labels)}
        order = [where[label.name] for label in self.labels]
        slopes, intercepts = fitted["slopes"], fitted["intercepts"]
        return [float(slopes[i]) for i in order], [float(intercepts[i]) for i in order]

    def calibrated(self) -> Calibrated | None:
        """What the calibration changes in the scores (None: no calibration)."""
        if self.calibration is None:
            return None
        return Calibrated(float(self.calibration.temperature), self.logistic())

    @property
    def support_identity(self) -> str | None:
        return self.support.identity() if self.support is not None else None

    @property
    def calibration_identity(self) -> str | None:
        """What a resumed run must match: the temperature and the file's digest."""
        if self.calibration is None:
            return None
        return f"temperature {self.temperature:g}, sha256:{self.calibration_digest}"

    def check(self, model: str | None) -> None:
        """UsageError where the calibration was fitted for another setup; model None: not
        known yet (checked again once the backend has started)."""
        if self.calibration is not None:
            self.calibration.check(
                self.calibration.model if model is None else model,
                [label.name for label in self.labels],
                templates_identity(self.templates),
                self.support_identity,
            )

    def thresholds(self) -> Thresholds:
        """Each label's threshold from the calibration (None: that label never reached the
        target precision, so its images are always unknown)."""
        if self.calibration is None:
            raise UsageError("--threshold auto needs --calibration FILE.json: it holds them")
        found = self.calibration.thresholds
        if self.multi_label:
            if self.calibration.multi_label is None:
                raise UsageError(
                    "--threshold auto with --multi-label needs a calibration file with "
                    "multi-label thresholds (evaluate --multi-label --calibrate writes them)"
                )
            found = self.calibration.multi_label.get("thresholds", {})
        return {label.name: found.get(label.name) for label in self.labels}


def prepare_fewshot(
    labels: Sequence[Label],
    templates: TemplateSet,
    support: Path | None = None,
    calibration: Path | None = None,
    auto_threshold: bool = False,
    include_hidden: bool = False,
    warn: Callable[[str], None] = _silent,
    multi_label: bool = False,
) -> FewShot | None:
    """Read the support folder and the calibration file and check them against the labels and
    templates (UsageError naming what is wrong); None where neither is asked for and the run is
    not multi-label. warn hears each label the support set leaves zero-shot."""
    if auto_threshold and calibration is None:
        raise UsageError("--threshold auto needs --calibration FILE.json: it holds the thresholds")
    if support is None and calibration is None and not multi_label:
        return None
    if support is not None and multi_label:
        raise UsageError(SUPPORT_NOT_MULTI_LABEL)
    files = find_support(support, labels, include_hidden) if support is not None else None
    for line in files.notes() if files is not None else ():
        warn(line)
    fitted, digest = None, None
    if calibration is not None:
        fitted = read_calibration(calibration)
        if fitted.multi_label is not None and not multi_label:  # no softmax part: a no-op
            raise UsageError(
                f"{clean_text(str(calibration))} was fitted by evaluate --multi-label "
                "--calibrate: use it with --multi-label, or fit one with evaluate --calibrate"
            )
        digest = hashlib.sha256(calibration.read_bytes()).hexdigest()[:16]
    found = FewShot(tuple(labels), templates, files, fitted, digest, multi_label)
    found.check(None)
    return found


def calibrated_thresholds(
    labels: Sequence[Label], templates: TemplateSet, calibration: Path, multi_label: bool
) -> Thresholds:
    """--threshold auto: each label's threshold in the calibration file (multi-label: those
    fitted for independent probabilities), by label name."""
    fitted = read_calibration(calibration)
    return FewShot(tuple(labels), templates, None, fitted, None, multi_label).thresholds()
