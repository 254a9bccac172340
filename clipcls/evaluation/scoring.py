"""Score a dataset's embeddings against one template set: one setup's Evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clipcls.cache import EmbeddingCache
from clipcls.classify import Classifier
from clipcls.evaluation.dataset import EmbeddedDataset
from clipcls.evaluation.metrics import Metrics, compute_metrics
from clipcls.labels import Label
from clipcls.pipeline import Encoder
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
    encoder: Encoder,
    labels: Sequence[Label],
    templates: TemplateSet,
    data: EmbeddedDataset,
    model: tuple[str, str | None],
    ks: tuple[int, ...] = (5,),
    cache: EmbeddingCache | None = None,
) -> Evaluation:
    """Score ready embeddings against one template set and compute the metrics."""
    classifier = Classifier(encoder, labels, templates, cache=cache)
    n_classes = len(labels)
    if len(data.embeddings):
        probabilities, _ = classifier.score(data.embeddings)
    else:
        probabilities = np.zeros((0, n_classes))
    metrics = compute_metrics(data.targets, probabilities, n_classes, ks)
    return Evaluation(model[0], model[1], templates, tuple(labels), metrics, probabilities, data)
