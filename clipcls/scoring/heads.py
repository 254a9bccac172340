"""How a label's logit becomes its probability: a softmax over the labels, or one of three ways
of giving each label its own (multi-label), each head naming the metrics that judge it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clipcls.errors import UsageError

SOFTMAX = "softmax"  # the labels compete: probabilities sum to 1
SIGMOID = "sigmoid"  # SigLIP-family models: trained with a sigmoid loss, they carry a bias
BACKGROUND = "background"  # others: each label against a background prompt, two-way
LOGISTIC = "logistic"  # others, calibrated: a logistic per label fitted on labeled images
BACKGROUND_TEXT = "something"  # filled into the run's templates: "a photo of a something."

# What judges each kind of head, as `evaluate --format json` names it: a ranking of the labels
# (top-k accuracy, per-class counts, calibration error), or each label's own yes/no.
RANKING_METRICS = (
    "top1",
    "top5",
    "balanced_accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "ece",
)
INDEPENDENT_METRICS = ("map", "ap", "precision", "recall", "f1")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed in float64 for stability."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return result


def sigmoid(values: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), computed without overflow, float64."""
    values = values.astype(np.float64)
    result: np.ndarray = np.where(
        values >= 0, 1.0 / (1.0 + np.exp(-np.abs(values))), np.exp(-np.abs(values))
    )
    return np.where(values >= 0, result, result / (1.0 + result))


@dataclass(frozen=True)
class Head:
    """A softmax over the run's labels (the default head); the multi-label heads below give
    each label a probability of its own. `method` names the head in rows and reports."""

    method: str = SOFTMAX
    independent: bool = field(default=False, init=False)  # each label on its own

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics an evaluation reports for this head."""
        return INDEPENDENT_METRICS if self.independent else RANKING_METRICS

    def probabilities(
        self, logits: np.ndarray, similarities: np.ndarray, images: np.ndarray
    ) -> np.ndarray:
        """(n_images, n_labels) from the logits (scale, bias, support votes and temperature
        applied), the cosines to the labels' texts and the image embeddings themselves."""
        return softmax(logits)


@dataclass(frozen=True)
class SigmoidHead(Head):
    """sigmoid(logit) with the model's scale and bias: open_clip's SigLIP output."""

    method: str = SIGMOID
    independent: bool = field(default=True, init=False)

    def probabilities(
        self, logits: np.ndarray, similarities: np.ndarray, images: np.ndarray
    ) -> np.ndarray:
        return sigmoid(logits)


@dataclass(frozen=True)
class BackgroundHead(Head):
    """sigmoid(logit_scale x (cos(image, label) - cos(image, background))): the label's share
    of a two-way softmax against the background prompt."""

    logit_scale: float = 1.0
    background: np.ndarray | None = None  # (dim,) unit: the background prompt's embedding
    method: str = BACKGROUND
    independent: bool = field(default=True, init=False)

    def probabilities(
        self, logits: np.ndarray, similarities: np.ndarray, images: np.ndarray
    ) -> np.ndarray:
        if self.background is None:
            raise _missing(self.method)
        # (n_images, dim) @ (dim,) -> (n_images,), against each label's cosine
        behind = images.astype(np.float32) @ self.background
        return sigmoid(self.logit_scale * (similarities - behind[:, None]))


@dataclass(frozen=True)
class LogisticHead(Head):
    """sigmoid(slope x cos + intercept), fitted per label on labeled images."""

    slopes: np.ndarray | None = None  # (n_labels,) on the cosine
    intercepts: np.ndarray | None = None
    method: str = LOGISTIC
    independent: bool = field(default=True, init=False)

    def probabilities(
        self, logits: np.ndarray, similarities: np.ndarray, images: np.ndarray
    ) -> np.ndarray:
        if self.slopes is None or self.intercepts is None:
            raise _missing(self.method)
        return sigmoid(similarities * self.slopes + self.intercepts)


def _missing(method: str) -> UsageError:
    return UsageError(f"multi-label method {method!r} is missing what it needs")
