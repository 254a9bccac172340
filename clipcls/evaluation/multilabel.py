"""`evaluate --multi-label`: the images of a labels CSV embedded once through a backend, every
label's independent probability (the model's sigmoid, label against a background prompt, or
a fitted logistic), and the mAP and counts that judge them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipcls.backends.base import Backend, Expected, Hooks
from clipcls.classify import ShowProgress, no_progress
from clipcls.errors import ClipclsError
from clipcls.evaluation.dataset import class_labels
from clipcls.fewshot.calibration import model_identity
from clipcls.labels import Label, check_labels
from clipcls.multilabel.metrics import MultiLabelMetrics, multilabel_metrics
from clipcls.multilabel.truth import MultiLabelTruth, read_truth
from clipcls.prompts import TemplateSet
from clipcls.scoring.heads import BACKGROUND_TEXT
from clipcls.scoring.spec import ScoreSpec, build_scorer
from clipcls.settings import model_id

if TYPE_CHECKING:
    from clipcls.evaluation.multilabel_calibrate import FittedMultiLabel

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class MultiLabelRun:
    """What a multi-label evaluation scores: the CSV's images and truth, one label per name
    (with its texts), one template set, and the threshold of the counts."""

    truth: MultiLabelTruth
    labels: tuple[Label, ...]
    templates: TemplateSet
    threshold: float = DEFAULT_THRESHOLD

    @classmethod
    def from_csv(
        cls,
        source: Path,
        templates: TemplateSet,
        labels: Sequence[Label] | None = None,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> MultiLabelRun:
        """A run on the CSV; the label set is `labels` where given (each CSV label must be
        one of them), else the CSV's labels, each embedded as its words (`dog_toy`: dog toy)."""
        given = check_labels(labels) if labels is not None else None
        truth = read_truth(source, [label.name for label in given] if given else None)
        chosen = given if given is not None else check_labels(class_labels(truth.labels))
        return cls(truth, tuple(chosen), templates, threshold)

    def expected(self) -> Expected:
        """What the run asks of the backend: its labels' and the background's prompts (a
        softmax-trained model needs the background; a local backend then answers from its
        cache alone the next time), and the CSV's images."""
        background = Label.plain(BACKGROUND_TEXT)
        paths = self.truth.paths
        return Expected((*self.labels, background), (self.templates,), lambda: paths, True)


@dataclass(frozen=True)
class MultiLabelEvaluation:
    """One model's multi-label results on the CSV, and what reproduces and inspects them."""

    model: str
    pretrained: str | None
    identity: str  # the model a calibration is fitted for (weights digest)
    templates: TemplateSet
    labels: tuple[Label, ...]
    method: str  # how each label got its probability: sigmoid, background or logistic
    source: Path  # the labels CSV
    paths: tuple[str, ...]  # the readable images
    truth: np.ndarray  # (n_readable, n_labels) bool
    probabilities: np.ndarray  # (n_readable, n_labels), each label on its own
    similarities: np.ndarray  # (n_readable, n_labels): cosines to the labels' texts
    metrics: MultiLabelMetrics
    failures: tuple[tuple[str, str], ...] = ()  # unreadable: path, error
    calibrated: FittedMultiLabel | None = None  # what --calibrate fitted on these images

    @property
    def model_id(self) -> str:
        """The model as `ARCH:TAG` (or its hf-hub:/local-dir: name)."""
        return model_id(self.model, self.pretrained)

    @property
    def name(self) -> str:
        return f"{self.model_id} / {self.templates.name}"

    @property
    def names(self) -> list[str]:
        return [label.name for label in self.labels]


def evaluate_multilabel(
    backend: Backend,
    run: MultiLabelRun,
    hooks: Hooks | None = None,
    progress: ShowProgress = no_progress,
) -> MultiLabelEvaluation:
    """Embed the CSV's images (from the cache where it can), give each label its probability
    by the head the model calls for, and compute mAP, per-label AP and the counts at the
    threshold."""
    voice = hooks or Hooks()
    backend.start(run.expected())
    with progress(len(run.truth.paths)) as advance:
        found = backend.embed_matrix(run.truth.paths, advance)
    if not found.rows:
        raise ClipclsError("no image of the labels CSV could be read")
    rows = list(found.rows)
    with voice.status(f"scoring with templates {run.templates.name}"):
        backend.embed_texts(run.templates.fill(BACKGROUND_TEXT))  # as run.expected() says
        scorer = build_scorer(ScoreSpec(run.labels, run.templates, multi_label=True), backend)
        probabilities, similarities = scorer.score(found.matrix)
    truth = run.truth.truth[rows]
    info = backend.info
    return MultiLabelEvaluation(
        model=info.model,
        pretrained=info.pretrained,
        identity=model_identity(backend.model_id, backend.weights),
        templates=run.templates,
        labels=run.labels,
        method=scorer.head.method,
        source=run.truth.source,
        paths=found.readable,
        truth=truth,
        probabilities=probabilities,
        similarities=similarities,
        metrics=multilabel_metrics(truth, probabilities, run.threshold),
        failures=found.failures,
    )
