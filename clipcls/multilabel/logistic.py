"""A logistic per label on its cosine to the label's text, fitted on labeled images: the
multi-label head (scoring.heads.LogisticHead) a calibration gives a softmax-trained model."""

from __future__ import annotations

import numpy as np

from clipcls.scoring.heads import sigmoid

NEWTON_STEPS = 50
RIDGE = 1e-3  # keeps a label that separates perfectly from an infinite slope


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
