"""What a prediction is, and its one wire form: the JSON object predict writes, the server
answers, its client reads back and the Ray workers send (to_record / from_record)."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clipcls.errors import RecordError
from clipcls.pathtext import clean_text, path_to_text, text_to_path

if TYPE_CHECKING:  # numpy loads where an embedding is read: a search's printer needs none
    import numpy as np


@dataclass(frozen=True)
class LabelScore:
    """One label's score for one image."""

    label: str
    probability: float  # softmax over the given labels
    similarity: float  # cosine between image and label embeddings

    def to_record(self) -> dict[str, Any]:
        """The JSON object: label, probability, similarity."""
        return {"label": self.label, "probability": self.probability, "similarity": self.similarity}


@dataclass(frozen=True)
class Prediction:
    """All labels for one image ranked by probability, or the reason it could not be read."""

    path: str
    scores: tuple[LabelScore, ...] = ()
    error: str | None = None
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)  # (dim,)

    @property
    def top(self) -> LabelScore | None:
        """The best label, or None for an unreadable image."""
        return self.scores[0] if self.scores else None

    def top_k(self, k: int) -> tuple[LabelScore, ...]:
        """The k best labels (all of them if there are fewer)."""
        return self.scores[:k]

    def to_record(self, top_k: int | None = None, embedding: bool = False) -> dict[str, Any]:
        """The JSON object: `{"path", "predictions": [...]}` (the top_k best, all if None), or
        `{"path", "error"}`; then `"embedding"` (a list, or null) when asked for.

        The path is written by path_to_text, so that from_record gives the same path back.
        """
        record: dict[str, Any] = {"path": path_to_text(self.path)}
        if self.error is not None:
            record["error"] = clean_text(self.error)
        else:
            kept = self.scores if top_k is None else self.top_k(top_k)
            record["predictions"] = [score.to_record() for score in kept]
        if embedding:
            record["embedding"] = None if self.embedding is None else self.embedding.tolist()
        return record

    @classmethod
    def from_record(
        cls, record: Any, labels: Collection[str] | None = None, path: str | None = None
    ) -> Prediction:
        """The Prediction a record holds; RecordError unless its scores are finite and, with
        labels, exactly one for each of them (a label never asked for could name a folder).

        Args:
            labels: the label names the record must score, when the caller knows them.
            path: the prediction's path, when the caller knows it better than the record.
        """
        try:
            path = text_to_path(str(record["path"])) if path is None else path
            if record.get("error"):
                return cls(path, error=str(record["error"]))
            scores = tuple(_score(item) for item in record.get("predictions", []))
            vector = record.get("embedding")
            embedding = None if vector is None else _vector(vector)
        except (AttributeError, KeyError, TypeError, ValueError):
            raise RecordError("not a prediction record") from None
        if embedding is not None and embedding.ndim != 1:
            raise RecordError("a prediction record whose embedding is not one vector")
        if not all(math.isfinite(s.probability + s.similarity) for s in scores):
            raise RecordError("a prediction record with scores that are not finite numbers")
        if labels is not None and (
            len(scores) != len(labels) or {s.label for s in scores} != set(labels)
        ):
            raise RecordError("a prediction record for other labels than the ones asked")
        return cls(path, scores, embedding=embedding)


def _score(item: Any) -> LabelScore:
    return LabelScore(str(item["label"]), float(item["probability"]), float(item["similarity"]))


def _vector(values: Any) -> np.ndarray:
    """A record's embedding as float32 (numpy imported here, on the first one read)."""
    import numpy

    return numpy.asarray(values, dtype=numpy.float32)
