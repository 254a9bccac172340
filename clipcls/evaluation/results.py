"""What an evaluation found, one setup (a model and a template set) at a time: a softmax head's
ranking of the labels (Evaluation) or each label judged on its own (MultiLabelEvaluation), with
the sections its head calls for (few-shot folds, what --calibrate fitted)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipcls.evaluation.dataset import EmbeddedDataset
from clipcls.evaluation.fewshot import FewShotResult
from clipcls.evaluation.metrics import Metrics
from clipcls.fewshot.calibration import Calibration, Reliability, reliability
from clipcls.labels import Label
from clipcls.multilabel.metrics import MultiLabelMetrics
from clipcls.prompts import TemplateSet
from clipcls.settings import model_id


@dataclass(frozen=True, kw_only=True)
class Setup:
    """One setup's model and prompts, as every report names them."""

    model: str
    pretrained: str | None
    templates: TemplateSet
    labels: tuple[Label, ...]
    identity: str | None = None  # the model a calibration is fitted for (weights digest)
    notices: tuple[str, ...] = ()  # warnings about the model the report repeats (RANDOM weights)

    @property
    def model_id(self) -> str:
        """The model as `ARCH:TAG` (or its hf-hub:/local-dir: name)."""
        return model_id(self.model, self.pretrained)

    @property
    def name(self) -> str:
        """A short name for comparison tables."""
        return f"{self.model_id} / {self.templates.name}"

    @property
    def names(self) -> list[str]:
        return [label.name for label in self.labels]


@dataclass(frozen=True, kw_only=True)
class Evaluation(Setup):
    """A softmax head's results on class folders: metrics plus what is needed to reproduce and
    inspect them."""

    metrics: Metrics
    probabilities: np.ndarray  # (n_readable, n_classes)
    data: EmbeddedDataset
    logits: np.ndarray | None = None  # (n_readable, n_classes), before the softmax
    few_shot: FewShotResult | None = None  # zero-shot against a support set, where asked
    calibrated: Calibration | None = None  # what --calibrate fitted on these images

    @property
    def reliability(self) -> Reliability:
        """Top-1 confidence against accuracy, and the expected calibration error."""
        return reliability(self.probabilities, self.data.targets)


@dataclass(frozen=True)
class FittedMultiLabel:
    """What --calibrate fitted for a multi-label run, and its effect on these images."""

    calibration: Calibration
    method: str  # the head a calibrated run uses: logistic, or the model's own sigmoid
    log_loss_before: float
    log_loss_after: float
    thresholds: dict[str, float | None]  # as the file holds them

    @property
    def reached(self) -> int:
        """How many labels got a threshold."""
        return sum(value is not None for value in self.thresholds.values())


@dataclass(frozen=True, kw_only=True)
class MultiLabelEvaluation(Setup):
    """An independent head's results on a labels CSV, and what reproduces and inspects them."""

    method: str  # how each label got its probability: sigmoid, background or logistic
    source: Path  # the labels CSV
    paths: tuple[str, ...]  # the readable images
    truth: np.ndarray  # (n_readable, n_labels) bool
    probabilities: np.ndarray  # (n_readable, n_labels), each label on its own
    similarities: np.ndarray  # (n_readable, n_labels): cosines to the labels' texts
    metrics: MultiLabelMetrics
    failures: tuple[tuple[str, str], ...] = ()  # unreadable: path, error
    calibrated: FittedMultiLabel | None = None  # what --calibrate fitted on these images
