"""The one Scorer: image embeddings against the labels' text embeddings, scaled and biased as
the model was trained, plus a support set's votes, divided by a temperature, through a head;
and the stream of ranked predictions it makes of embedded images, batch by batch."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from clipcls.errors import ClipclsError
from clipcls.labels import Label
from clipcls.pipeline import EmbeddedBatch
from clipcls.prediction import LabelScore, Prediction
from clipcls.scoring.adapter import SupportSet, TipAdapter
from clipcls.scoring.heads import Head


@dataclass(frozen=True, eq=False)
class Scorer:
    """Scores image embeddings against labels: the labels' text side with no image tower (a
    backend's text tower gives the weights; the images may be embedded anywhere). Built by
    build_scorer; similarities stay the cosines to the labels' texts whatever the head."""

    labels: tuple[Label, ...]
    label_weights: np.ndarray  # (n_labels, dim) unit rows
    logit_scale: float
    logit_bias: float | None = None
    head: Head = field(default_factory=Head)
    support: SupportSet | None = None  # examples whose cache model adds votes
    adapter: TipAdapter | None = None
    temperature: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))

    def logits(
        self, image_embeddings: np.ndarray, paths: Sequence[str] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """(logits, similarities), each (n_images, n_labels); paths (the images', where known)
        leave an input that is itself a support example out of its own neighbours."""
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
        """(probabilities, similarities), each (n_images, n_labels); ClipclsError where one is
        not a finite number (never written as a NaN answer)."""
        with np.errstate(all="ignore"):  # no numpy warning: the check below says it in a line
            logits, similarities = self.logits(image_embeddings, paths)
            probabilities = self.head.probabilities(logits, similarities, image_embeddings)
        if not (np.isfinite(probabilities).all() and np.isfinite(similarities).all()):
            raise ClipclsError(
                f"the scores are not finite numbers (logit scale {self.logit_scale:g}, bias "
                f"{self.logit_bias}, temperature {self.temperature:g}): none is answered"
            )
        return probabilities, similarities

    def rank(self, path: str, probabilities: np.ndarray, similarities: np.ndarray) -> Prediction:
        """One image's labels, most probable first (ties in label order)."""
        order = np.argsort(-probabilities, kind="stable")
        scores = tuple(
            LabelScore(self.labels[i].name, float(probabilities[i]), float(similarities[i]))
            for i in order
        )
        return Prediction(path, scores)

    def predict_embedded(self, batch: EmbeddedBatch) -> list[Prediction]:
        """Predictions for an embedded batch, each keeping its embedding; errors in place."""
        found = []
        vectors = iter(batch.embeddings)
        for path, error in zip(batch.paths, batch.errors, strict=True):
            embedding = None if error is not None else next(vectors)
            found.append(Prediction(path, error=error, embedding=embedding))
        return self.rescore(found)

    def rescore(self, found: Sequence[Prediction]) -> list[Prediction]:
        """Embedded predictions (a backend's embed_images) ranked, in order, each keeping its
        embedding; an error stays as it is, a row with neither is 'not embedded'."""
        readable = [p for p in found if _embedded(p)]
        scored: Iterator[tuple[np.ndarray, np.ndarray]] = iter(())
        if readable:
            matrix = np.stack([np.asarray(p.embedding, dtype=np.float32) for p in readable])
            probabilities, similarities = self.score(matrix, [str(p.path) for p in readable])
            scored = zip(probabilities, similarities, strict=True)
        result = []
        for prediction in found:
            if not _embedded(prediction):
                result.append(
                    prediction if prediction.error else replace(prediction, error="not embedded")
                )
                continue
            probabilities_row, similarities_row = next(scored)
            ranked = self.rank(str(prediction.path), probabilities_row, similarities_row)
            result.append(replace(ranked, embedding=prediction.embedding))
        return result

    def predictions(
        self, embedded: Iterable[Prediction], batch: int, embeddings: bool = False
    ) -> Iterator[Prediction]:
        """Ranked predictions of a stream of embedded ones, scored `batch` at a time (the batch
        size a local run embeds in, so that rows are the same whichever backend embedded them);
        each keeps its embedding only where embeddings is asked for."""
        stream = iter(embedded)
        while chunk := list(itertools.islice(stream, batch)):
            for prediction in self.rescore(chunk):
                yield prediction if embeddings else replace(prediction, embedding=None)


def _embedded(found: Prediction) -> bool:
    return found.error is None and found.embedding is not None
