"""Scores with a support set and a calibration: the zero-shot logits plus the cache model's,
divided by the fitted temperature; and a Predictor that scores any backend's embeddings so."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipcls.classify import Scorer, softmax
from clipcls.fewshot.adapter import TipAdapter, fit_adapter
from clipcls.fewshot.support import SupportSet
from clipcls.labels import Label
from clipcls.multilabel.head import MultiLabel, MultiLabelHead
from clipcls.prediction import Prediction
from clipcls.prompts import TemplateSet

if TYPE_CHECKING:
    from clipcls.backends.base import Backend

BATCH = 256  # embeddings scored at once: the affinity to every example is (BATCH, n_examples)


class AdaptedScorer(Scorer):
    """A Scorer whose logits add a support set's cache model and are divided by a temperature.

    Similarities stay the cosines to the labels' text embeddings; probabilities change."""

    def __init__(
        self,
        base: Scorer,
        support: SupportSet | None = None,
        adapter: TipAdapter | None = None,
        temperature: float = 1.0,
        head: MultiLabelHead | None = None,
    ) -> None:
        super().__init__(base.labels, base.label_weights, base.logit_scale, base.logit_bias)
        self.support, self.adapter, self.temperature = support, adapter, temperature
        self.head = head  # multi-label: each label's probability on its own

    def logits(
        self, image_embeddings: np.ndarray, paths: Sequence[str] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """(logits, similarities), each (n_images, n_labels)."""
        # (n_images, dim) @ (dim, n_labels) -> (n_images, n_labels)
        similarities = image_embeddings @ self.label_weights.T
        logits = self.logit_scale * similarities
        if self.logit_bias is not None:
            logits = logits + self.logit_bias
        if self.adapter is not None and self.support is not None:
            exclude = [self.support.index_of(path) for path in paths]
            logits = logits + self.adapter.logits(image_embeddings, exclude)
        return logits / self.temperature, similarities

    def score(
        self, image_embeddings: np.ndarray, paths: Sequence[str] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        logits, similarities = self.logits(image_embeddings, paths)
        if self.head is not None:
            return self.head.probabilities(logits, similarities, image_embeddings), similarities
        return softmax(logits), similarities

    def rescore(self, found: Sequence[Prediction]) -> list[Prediction]:
        """Predictions ranked by this scorer from embedded ones (a backend's embed_images), in
        order, each keeping its embedding; errors stay as they are."""
        readable = [p for p in found if _embedded(p)]
        if not readable:
            return [p if p.error else replace(p, error="not embedded") for p in found]
        matrix = np.stack([np.asarray(p.embedding, dtype=np.float32) for p in readable])
        probabilities, similarities = self.score(matrix, [str(p.path) for p in readable])
        ranked = iter(range(len(readable)))
        result = []
        for prediction in found:
            if not _embedded(prediction):
                result.append(
                    prediction if prediction.error else replace(prediction, error="not embedded")
                )
                continue
            row = next(ranked)
            scored = self._rank(str(prediction.path), probabilities[row], similarities[row])
            result.append(replace(scored, embedding=prediction.embedding))
        return result


def adapted_scorer(
    base: Scorer,
    support: SupportSet | None,
    temperature: float = 1.0,
    head: MultiLabelHead | None = None,
) -> AdaptedScorer:
    """base with the support set's cache model, alpha and beta fitted on the examples."""
    if support is None:
        return AdaptedScorer(base, temperature=temperature, head=head)
    zero_shot = base.logit_scale * (support.keys @ base.label_weights.T)
    if base.logit_bias is not None:
        zero_shot = zero_shot + base.logit_bias
    adapter = fit_adapter(support.keys, support.targets, zero_shot, len(base.labels))
    return AdaptedScorer(base, support, adapter, temperature, head)


def _embedded(found: Prediction) -> bool:
    return found.error is None and found.embedding is not None


class AdaptedPredictor:
    """A Predictor over any backend: the backend embeds the images (from its cache where it
    can), this scores them with the support set and the temperature."""

    def __init__(
        self,
        backend: Backend,
        support: SupportSet | None,
        temperature: float = 1.0,
        multi_label: MultiLabel | None = None,
    ) -> None:
        self.backend, self.support, self.temperature = backend, support, temperature
        self.multi_label = multi_label
        self._scorers: dict[tuple[tuple[Label, ...], TemplateSet], AdaptedScorer] = {}

    @property
    def weights(self) -> str | None:
        return self.backend.weights

    @property
    def known_model(self) -> str | None:
        return self.backend.known_model

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def start(self, expected: object = None) -> None:
        self.backend.start(expected)  # type: ignore[arg-type]

    def scorer(self, labels: Sequence[Label], templates: TemplateSet) -> AdaptedScorer:
        """The labels' scorer, built once per labels and templates."""
        key = (tuple(labels), templates)
        if key not in self._scorers:
            base = self.backend.scorer(labels, templates)
            head = None
            if self.multi_label is not None:
                head = self.multi_label.head(base, self.backend.embed_texts, templates)
            self._scorers[key] = adapted_scorer(base, self.support, self.temperature, head)
        return self._scorers[key]

    def predict(
        self,
        paths: Iterable[Path | str],
        labels: Sequence[Label],
        templates: TemplateSet,
        embeddings: bool = False,
    ) -> Iterator[Prediction]:
        scorer = self.scorer(labels, templates)
        found = self.backend.embed_images(paths)
        while chunk := list(itertools.islice(found, BATCH)):
            for prediction in scorer.rescore(chunk):
                yield prediction if embeddings else replace(prediction, embedding=None)
