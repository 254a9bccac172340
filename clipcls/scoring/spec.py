"""What a run scores with (ScoreSpec) and build_scorer, the one place it becomes a Scorer: the
labels' text weights from a text tower, the head the mode and the model call for, the support
set's fitted cache model, and the calibration's temperature."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import numpy as np

from clipcls.errors import UsageError
from clipcls.labels import Label
from clipcls.prompts import TemplateSet
from clipcls.scoring.adapter import SupportSet, fit_adapter
from clipcls.scoring.calibrated import check_logistic, check_temperature
from clipcls.scoring.heads import (
    BACKGROUND_TEXT,
    BackgroundHead,
    Head,
    LogisticHead,
    SigmoidHead,
)
from clipcls.scoring.scorer import Scorer

# A support set's cache model is fitted to rank the labels by a softmax: the independent
# probabilities of a background prompt or a logistic never read it, a sigmoid's bias would shift
SUPPORT_NOT_MULTI_LABEL = (
    "--support with --multi-label: the support set's cache model ranks labels by a softmax, not "
    "each label on its own; give one or the other"
)

# Per label, in the run's order: (slopes, intercepts) of a logistic on the cosine.
Logistic = tuple[Sequence[float], Sequence[float]]


class TextTower(Protocol):
    """What scoring needs of a model: its text embeddings and how its logits are scaled (a
    backend is one)."""

    @property
    def logit_scale(self) -> float: ...

    @property
    def logit_bias(self) -> float | None: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length text embeddings, (n_texts, dim)."""
        ...


@dataclass(frozen=True)
class Calibrated:
    """What a calibration file changes in scoring: the softmax's temperature, and a logistic
    per label fitted for multi-label runs (slopes, intercepts in the run's label order)."""

    temperature: float = 1.0
    logistic: Logistic | None = None

    def __post_init__(self) -> None:
        """BadNumber (a ValueError) naming a field that would make a score no finite number."""
        check_temperature(self.temperature)
        if self.logistic is not None:
            slopes, intercepts = self.logistic
            count = len(slopes) if isinstance(slopes, Sequence) else 0
            check_logistic(slopes, "slopes", count)
            check_logistic(intercepts, "intercepts", count)


@dataclass(frozen=True)
class ScoreSpec:
    """Everything that decides a run's scores besides the model: its labels, templates, mode
    (multi_label: each label's probability its own), support set and calibration."""

    labels: tuple[Label, ...]
    templates: TemplateSet
    multi_label: bool = False
    support: SupportSet | None = None  # embedded examples, indexed by the run's labels
    calibration: Calibrated | None = None

    def __post_init__(self) -> None:
        if self.support is not None and self.multi_label:
            raise UsageError(SUPPORT_NOT_MULTI_LABEL)

    def to_record(self) -> dict[str, Any]:
        """The part that travels to a server (labels, templates, mode) as JSON; a support set
        and a calibration stay where they were read (a server brings its own examples)."""
        templates = self.templates
        return {
            "labels": [{"name": label.name, "texts": list(label.texts)} for label in self.labels],
            "templates": {**asdict(templates), "templates": list(templates.templates)},
            "multi_label": self.multi_label,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ScoreSpec:
        """The spec to_record wrote, taken as it is (the server checked it when it came)."""
        labels = tuple(Label(label["name"], tuple(label["texts"])) for label in record["labels"])
        templates = record["templates"]
        found = TemplateSet(**{**templates, "templates": tuple(templates["templates"])})
        return cls(labels, found, bool(record.get("multi_label")))


def label_prompts(labels: Sequence[Label], templates: TemplateSet) -> list[str]:
    """Every (text, template) prompt of the labels, label by label."""
    return [prompt for label in labels for text in label.texts for prompt in templates.fill(text)]


def label_weights(
    embed_texts: Callable[[Sequence[str]], np.ndarray],
    labels: Sequence[Label],
    templates: TemplateSet,
) -> np.ndarray:
    """The label embeddings from a text tower (embed_texts: prompts -> unit rows): each label's
    prompts averaged and re-normalized, (n_labels, dim)."""
    flat = label_prompts(labels, templates)
    embeddings = embed_texts(flat)  # (n_prompts, dim), rows L2-normalized
    counts = [len(label.texts) * len(templates.templates) for label in labels]
    bounds = np.cumsum([0, *counts])
    rows = [embeddings[start:end].mean(axis=0) for start, end in itertools.pairwise(bounds)]
    weights = np.stack(rows)
    weights /= np.linalg.norm(weights, axis=1, keepdims=True)
    return weights.astype(np.float32)


def build_scorer(spec: ScoreSpec, tower: TextTower) -> Scorer:
    """The spec's Scorer with tower's text side: the only place the parts are put together."""
    weights = label_weights(tower.embed_texts, spec.labels, spec.templates)
    scale, bias = tower.logit_scale, tower.logit_bias
    calibration = spec.calibration or Calibrated()
    head = Head()
    if spec.multi_label:
        head = multi_label_head(scale, bias, calibration.logistic, tower, spec.templates)
    # the temperature calibrates a softmax: a multi-label head's probabilities keep theirs
    temperature = 1.0 if spec.multi_label else calibration.temperature
    scorer = Scorer(spec.labels, weights, scale, bias, head, temperature=temperature)
    return with_support(scorer, spec.support)


def with_support(scorer: Scorer, support: SupportSet | None) -> Scorer:
    """scorer with the support set's cache model, alpha and beta fitted by leave-one-out on
    the examples (evaluate --shots fits one per fold on the same text side)."""
    if support is None:
        return scorer
    # the examples' own zero-shot logits: (n_examples, dim) @ (dim, n_labels)
    zero_shot = scorer.logit_scale * (support.keys @ scorer.label_weights.T)
    if scorer.logit_bias is not None:
        zero_shot = zero_shot + scorer.logit_bias
    adapter = fit_adapter(support.keys, support.targets, zero_shot, len(scorer.labels))
    return replace(scorer, support=support, adapter=adapter)


def multi_label_head(
    logit_scale: float,
    logit_bias: float | None,
    logistic: Logistic | None,
    tower: TextTower,
    templates: TemplateSet,
) -> Head:
    """The model's own sigmoid where it has a bias (SigLIP); else a fitted logistic where a
    calibration gives one; else each label against the background prompt, embedded through
    the run's templates and averaged like a label."""
    if logit_bias is not None:
        return SigmoidHead()
    if logistic is not None:
        slopes, intercepts = (np.asarray(v, dtype=np.float64) for v in logistic)
        return LogisticHead(slopes=slopes, intercepts=intercepts)
    rows = tower.embed_texts(templates.fill(BACKGROUND_TEXT))
    mean = rows.mean(axis=0)
    background: np.ndarray = (mean / np.linalg.norm(mean)).astype(np.float32)
    return BackgroundHead(logit_scale=logit_scale, background=background)
