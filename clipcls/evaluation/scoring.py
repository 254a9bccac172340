"""Score a dataset's embeddings against one template set: one setup's Evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipcls.classify import Scorer
from clipcls.evaluation.dataset import EmbeddedDataset
from clipcls.evaluation.metrics import Metrics, compute_metrics
from clipcls.labels import Label, check_labels
from clipcls.prompts import TemplateSet
from clipcls.settings import model_id


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
        scorer: the labels' text side with these templates (a backend's `scorer`).
        model: (model, pretrained) as the report names them.
    """
    labels = check_labels(scorer.labels)  # class folders that differ only in case are refused
    n_classes = len(labels)
    if len(data.embeddings):
        probabilities, _ = scorer.score(data.embeddings)
    else:
        probabilities = np.zeros((0, n_classes))
    metrics = compute_metrics(data.targets, probabilities, n_classes, ks)
    return Evaluation(model[0], model[1], templates, labels, metrics, probabilities, data)
