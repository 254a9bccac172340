"""Independent per-label probabilities: the three heads on known numbers, the fitted logistic,
and the scorer and predictor that carry a head."""

from __future__ import annotations

import numpy as np
import pytest

from clipcls.errors import UsageError
from clipcls.labels import Label
from clipcls.multilabel.logistic import fit_logistic
from clipcls.prompts import single_templates
from clipcls.scoring.heads import (
    BACKGROUND,
    LOGISTIC,
    SIGMOID,
    BackgroundHead,
    LogisticHead,
    SigmoidHead,
    sigmoid,
)
from clipcls.scoring.scorer import Scorer
from clipcls.scoring.spec import multi_label_head


class Tower:
    """A text tower that embeds every text as one vector, noting what it was asked."""

    def __init__(self, vector: np.ndarray) -> None:
        self.vector, self.asked = vector, []  # type: list[list[str]]

    logit_scale, logit_bias = 10.0, None

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        self.asked.append(list(texts))
        return np.tile(self.vector, (len(texts), 1))


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def test_sigmoid_is_exact_and_never_overflows() -> None:
    values = np.array([-1000.0, -3.0, 0.0, 2.5, 1000.0])
    expected = [0.0, 1 / (1 + np.exp(3.0)), 0.5, 1 / (1 + np.exp(-2.5)), 1.0]
    assert np.allclose(sigmoid(values), expected, atol=1e-15, rtol=1e-12)


def test_the_head_follows_the_model() -> None:
    tower, templates = Tower(unit(np.ones(4))), single_templates(["{}"])
    assert multi_label_head(10.0, -5.0, None, tower, templates).method == SIGMOID
    assert multi_label_head(10.0, None, None, tower, templates).method == BACKGROUND
    assert multi_label_head(10.0, None, ([1.0], [0.0]), tower, templates).method == LOGISTIC


def test_siglip_style_probabilities_are_sigmoid_of_scale_cos_plus_bias() -> None:
    rng = np.random.default_rng(0)
    images, weights = unit(rng.normal(size=(5, 8))), unit(rng.normal(size=(3, 8)))
    scorer = Scorer(tuple(Label.plain(n) for n in "abc"), weights, 12.0, -4.0, SigmoidHead())
    probabilities, similarities = scorer.score(images)
    assert np.allclose(probabilities, 1 / (1 + np.exp(-(12.0 * images @ weights.T - 4.0))))
    assert np.allclose(similarities, images @ weights.T)
    assert not np.allclose(probabilities.sum(axis=1), 1.0)  # independent, not a softmax


def test_background_is_each_labels_two_way_softmax_against_the_background() -> None:
    rng = np.random.default_rng(1)
    images, weights, behind = (unit(rng.normal(size=s)) for s in ((4, 8), (2, 8), (8,)))
    head = BackgroundHead(logit_scale=20.0, background=behind)
    found = head.probabilities(20.0 * images @ weights.T, images @ weights.T, images)
    for i in range(4):
        for j in range(2):
            pair = np.exp(20.0 * np.array([images[i] @ weights[j], images[i] @ behind]))
            assert found[i, j] == pytest.approx(pair[0] / pair.sum(), rel=1e-5)


def test_a_head_without_its_parts_says_so() -> None:
    with pytest.raises(UsageError, match="missing"):
        LogisticHead().probabilities(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 2)))


def test_fit_logistic_recovers_known_parameters_and_stays_finite_when_separable() -> None:
    rng = np.random.default_rng(2)
    cosines = rng.normal(scale=0.1, size=(4000, 2))
    truth = rng.random((4000, 2)) < sigmoid(cosines * [30.0, -10.0] + [1.0, -2.0])
    slopes, intercepts = fit_logistic(cosines, truth)
    assert slopes == pytest.approx([30.0, -10.0], rel=0.15)
    assert intercepts == pytest.approx([1.0, -2.0], abs=0.2)
    separable = fit_logistic(cosines[:, :1], cosines[:, :1] > 0)
    assert np.isfinite(separable[0]).all() and separable[0][0] > 0


def test_multi_label_embeds_the_background_only_when_the_model_needs_it() -> None:
    tower = Tower(unit(np.ones(4)))
    asked = tower.asked
    templates = single_templates(["a photo of a {}."])
    assert multi_label_head(10.0, -3.0, None, tower, templates).method == SIGMOID and asked == []
    assert multi_label_head(10.0, None, None, tower, templates).method == BACKGROUND
    assert asked == [["a photo of a something."]]
