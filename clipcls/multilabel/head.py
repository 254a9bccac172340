"""Independent per-label probabilities from a run's logits: how each kind of model turns a
label's score into "does this label apply", never a softmax dressed up as independent."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from clipcls.classify import Scorer
from clipcls.errors import UsageError
from clipcls.prompts import TemplateSet

SIGMOID = "sigmoid"  # SigLIP-family models: trained with a sigmoid loss, they carry a bias
BACKGROUND = "background"  # others: each label against a background prompt, two-way
LOGISTIC = "logistic"  # others, calibrated: a logistic per label fitted on labeled images
BACKGROUND_TEXT = "something"  # filled into the run's templates: "a photo of a something."
NEWTON_STEPS = 50
RIDGE = 1e-3  # keeps a label that separates perfectly from an infinite slope


def sigmoid(values: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), computed without overflow, float64."""
    values = values.astype(np.float64)
    result: np.ndarray = np.where(
        values >= 0, 1.0 / (1.0 + np.exp(-np.abs(values))), np.exp(-np.abs(values))
    )
    return np.where(values >= 0, result, result / (1.0 + result))


@dataclass(frozen=True)
class MultiLabelHead:
    """How a run's labels each get a probability of their own."""

    method: str
    logit_scale: float
    background: np.ndarray | None = None  # (dim,) unit: the background prompt's embedding
    slopes: np.ndarray | None = None  # logistic: (n_labels,) on the cosine
    intercepts: np.ndarray | None = None

    def probabilities(
        self, logits: np.ndarray, similarities: np.ndarray, images: np.ndarray
    ) -> np.ndarray:
        """(n_images, n_labels), each in [0, 1] on its own.

        sigmoid: sigmoid(logit) with the model's scale and bias (open_clip's SigLIP output);
        background: sigmoid(logit_scale x (cos(image, label) - cos(image, background))), the
        label's share of a two-way softmax against the background prompt; logistic:
        sigmoid(slope x cos + intercept), fitted per label on labeled images.
        """
        if self.method == SIGMOID:
            return sigmoid(logits)
        if self.method == BACKGROUND and self.background is not None:
            # (n_images, dim) @ (dim,) -> (n_images,), against each label's cosine
            behind = images.astype(np.float32) @ self.background
            return sigmoid(self.logit_scale * (similarities - behind[:, None]))
        if self.method == LOGISTIC and self.slopes is not None and self.intercepts is not None:
            return sigmoid(similarities * self.slopes + self.intercepts)
        raise UsageError(f"multi-label method {self.method!r} is missing what it needs")


def choose_head(
    logit_scale: float,
    logit_bias: float | None,
    embed_background: Callable[[], np.ndarray],
    logistic: tuple[Sequence[float], Sequence[float]] | None = None,
) -> MultiLabelHead:
    """The model's own sigmoid where it has a bias (SigLIP); else a fitted logistic where a
    calibration gives one; else label against background (embed_background: its unit vector)."""
    if logit_bias is not None:
        return MultiLabelHead(SIGMOID, logit_scale)
    if logistic is not None:
        slopes, intercepts = (np.asarray(v, dtype=np.float64) for v in logistic)
        return MultiLabelHead(LOGISTIC, logit_scale, slopes=slopes, intercepts=intercepts)
    return MultiLabelHead(BACKGROUND, logit_scale, background=embed_background())


@dataclass(frozen=True)
class MultiLabel:
    """A run's multi-label choice: `logistic` where a calibration fitted one, per label in the
    run's order (slopes, intercepts); else the model decides (choose_head)."""

    logistic: tuple[Sequence[float], Sequence[float]] | None = None

    def head(
        self,
        base: Scorer,
        embed_texts: Callable[[Sequence[str]], np.ndarray],
        templates: TemplateSet,
    ) -> MultiLabelHead:
        """The head for base's labels; the background prompt is embedded only if needed."""

        def background() -> np.ndarray:
            # the background text through the run's templates, averaged like a label's
            rows = embed_texts(templates.fill(BACKGROUND_TEXT))
            mean = rows.mean(axis=0)
            unit: np.ndarray = (mean / np.linalg.norm(mean)).astype(np.float32)
            return unit

        return choose_head(base.logit_scale, base.logit_bias, background, self.logistic)


def fit_logistic(similarities: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per label, the slope and intercept on the cosine that minimize the log-loss against
    truth (n_images, n_labels) of 0/1: Newton's method on two parameters, a small ridge on the
    slope so a label its cosine separates perfectly still gets a finite one."""
    n_labels = similarities.shape[1]
    slopes, intercepts = np.zeros(n_labels), np.zeros(n_labels)
    for label in range(n_labels):
        x, y = similarities[:, label].astype(np.float64), truth[:, label].astype(np.float64)
        design = np.stack([x, np.ones_like(x)], axis=1)  # (n, 2)
        params = np.array([0.0, np.log((y.mean() + 1e-3) / (1 - y.mean() + 1e-3))])
        for _ in range(NEWTON_STEPS):
            p = sigmoid(design @ params)
            gradient = design.T @ (p - y) + RIDGE * np.array([params[0], 0.0])
            hessian = (design * (p * (1 - p))[:, None]).T @ design + RIDGE * np.diag([1.0, 1e-9])
            step = np.linalg.solve(hessian, gradient)
            params -= step
            if np.abs(step).max() < 1e-10:
                break
        slopes[label], intercepts[label] = params
    return slopes, intercepts
