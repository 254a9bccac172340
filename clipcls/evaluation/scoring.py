"""Score a dataset's embeddings against one template set: one setup's Evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from clipcls.evaluation.dataset import EmbeddedDataset
from clipcls.evaluation.metrics import Metrics, compute_metrics
from clipcls.fewshot.calibration import Calibration, Reliability, reliability
from clipcls.labels import Label, check_labels
from clipcls.prompts import TemplateSet
from clipcls.scoring.heads import softmax
from clipcls.scoring.scorer import Scorer
from clipcls.settings import model_id

if TYPE_CHECKING:
    from clipcls.evaluation.fewshot import FewShotResult


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
    logits: np.ndarray | None = None  # (n_readable, n_classes), before the softmax
    identity: str | None = None  # the model a calibration is fitted for (weights digest)
    few_shot: FewShotResult | None = None  # zero-shot against a support set, where asked
    calibrated: Calibration | None = None  # what --calibrate fitted on these images

    @property
    def reliability(self) -> Reliability:
        """Top-1 confidence against accuracy, and the expected calibration error."""
        return reliability(self.probabilities, self.data.targets)

    @property
    def model_id(self) -> str:
        """The model as `ARCH:TAG` (or its hf-hub:/local-dir: name)."""
        return model_id(self.model, self.pretrained)

    @property
    def name(self) -> str:
        """A short name for comparison tables."""
        return f"{self.model_id} / {self.templates.name}"


def evaluate_embedded(
    scorer: Scorer,
    templates: TemplateSet,
    data: EmbeddedDataset,
    model: tuple[str, str | None],
    ks: tuple[int, ...] = (5,),
) -> Evaluation:
    """Score ready embeddings with one template set's scorer and compute the metrics.

    Args:
        scorer: the labels' text side with these templates (a backend's `scorer`), or one with
            a support set (each image left out of its own neighbours, by path).
        model: (model, pretrained) as the report names them.
    """
    labels = check_labels(scorer.labels)  # class folders that differ only in case are refused
    n_classes = len(labels)
    if len(data.embeddings):
        logits, _ = scorer.logits(data.embeddings, data.paths)
    else:
        logits = np.zeros((0, n_classes))
    probabilities = softmax(logits) if len(logits) else logits
    metrics = compute_metrics(data.targets, probabilities, n_classes, ks)
    return Evaluation(model[0], model[1], templates, labels, metrics, probabilities, data, logits)
