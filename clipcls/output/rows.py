"""Output rows: an image's final label (after any threshold) and the columns that describe it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clipcls.output.csv_text import is_number_column
from clipcls.pathtext import clean_text as clean_text  # re-exported: its old home
from clipcls.pathtext import path_to_text
from clipcls.prediction import LabelScore, Prediction

if TYPE_CHECKING:  # rows only carry embeddings: writing a row needs no numpy
    import numpy as np

DEFAULT_UNKNOWN = "unknown"
MULTI_THRESHOLD = 0.5  # --multi-label's --threshold unless one is given
SEPARATOR = ";"  # between a multi-label row's labels, and its destinations
PROB = "prob:"  # a multi-label output's column of one label's probability: prob:LABEL


# A threshold for every label, or one per label name (None: that label is always unknown).
Threshold = float | Mapping[str, float | None]

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text for a terminal: clean_text, and control characters as \\xNN, so that a file name
    holding ESC or CR can neither recolour the screen nor overwrite what is on it."""
    return CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", clean_text(text))


@dataclass(frozen=True)
class Row:
    """One image in the output: its final label and top-k scores, or why it has none."""

    path: str
    label: str = ""  # the top label, or the unknown label below the threshold; "" on error
    scores: tuple[LabelScore, ...] = ()  # top-k, ranked by probability
    error: str | None = None
    model: str = ""
    destination: str = ""  # where --sort-into put the file (multi-label: places joined by ;)
    labels: tuple[str, ...] = ()  # multi-label: every label at or above its threshold
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def best(self) -> LabelScore | None:
        """The model's top label, whatever the threshold decided."""
        return self.scores[0] if self.scores else None


def to_row(
    prediction: Prediction,
    top_k: int,
    threshold: Threshold | None = None,
    unknown_label: str = DEFAULT_UNKNOWN,
    model: str = "",
) -> Row:
    """Keep the top-k scores; below the threshold (one for all labels, or the top label's own)
    the label becomes the unknown label."""
    if prediction.error is not None or prediction.top is None:
        return Row(prediction.path, error=prediction.error or "no scores", model=model)
    top = prediction.top
    limit = threshold.get(top.label) if isinstance(threshold, Mapping) else threshold
    if isinstance(threshold, Mapping) and limit is None:
        below = True  # the label never reached the calibration's target precision
    else:
        below = limit is not None and top.probability < limit
    label = unknown_label if below else top.label
    scores = prediction.top_k(top_k)
    return Row(prediction.path, label, scores, model=model, embedding=prediction.embedding)


def reaches(score: LabelScore, threshold: Threshold) -> bool:
    """Whether a label's probability is at or above its threshold (a per-label None: never)."""
    limit = threshold.get(score.label) if isinstance(threshold, Mapping) else threshold
    return limit is not None and score.probability >= limit


def to_multi_row(
    prediction: Prediction,
    threshold: Threshold = MULTI_THRESHOLD,
    unknown_label: str = "",
    model: str = "",
) -> Row:
    """A multi-label row: every label at or above its threshold, most probable first (none:
    the unknown label, or no label where that is ""), and every label's probability."""
    if prediction.error is not None or prediction.top is None:
        return Row(prediction.path, error=prediction.error or "no scores", model=model)
    chosen = tuple(score.label for score in prediction.scores if reaches(score, threshold))
    chosen = chosen or ((unknown_label,) if unknown_label else ())
    return Row(
        prediction.path,
        SEPARATOR.join(chosen),
        prediction.scores,
        model=model,
        labels=chosen,
        embedding=prediction.embedding,
    )


@dataclass(frozen=True)
class Columns:
    """Which columns an output has; the CSV header and JSON keys follow from it."""

    top_k: int
    best_label: bool = False  # with a threshold, `label` may differ from the model's top label
    model: bool = False  # label's rows: also a top-level `label` in every JSON object
    destination: str = ""  # "destination", or "planned_destination" for a dry run; "" for none
    embedding: bool = False  # the image embedding too (--save-embeddings; JSONL and Parquet)
    # multi-label: the run's label names, in order; `labels` and one prob:LABEL column each
    # take the place of the ranked columns
    multi_label: tuple[str, ...] = ()

    def header(self) -> list[str]:
        """CSV columns: path,label,probability,similarity first (multi-label: path,labels,
        prob:LABEL...) and error last."""
        if self.multi_label:
            names = ["path", "labels", *(PROB + name for name in self.multi_label)]
        else:
            names = ["path", "label", "probability", "similarity"]
            names += ["best_label"] if self.best_label else []
            names += [
                f"{n}_{k}" for k in range(2, self.top_k + 1) for n in ("label", "probability")
            ]
        names += ["model"] if self.model else []
        names += [self.destination] if self.destination else []
        names += ["embedding"] if self.embedding else []
        return [*names, "error"]

    def csv_values(self, row: Row) -> list[str]:
        """One CSV row; an unreadable image has empty score columns and its error filled in."""
        values = dict.fromkeys(self.header(), "")
        values.update(path=path_to_text(row.path), model=row.model)
        if self.destination:
            values[self.destination] = path_to_text(row.destination)
        if row.error is not None:
            values["error"] = clean_text(row.error)
        elif self.multi_label:
            values["labels"] = SEPARATOR.join(row.labels)
            values.update((PROB + s.label, f"{s.probability:.6f}") for s in row.scores)
        elif row.best is not None:
            values.update(label=row.label, best_label=row.best.label)
            values.update(probability=f"{row.best.probability:.6f}")
            values.update(similarity=f"{row.best.similarity:.6f}")
            for rank, score in enumerate(row.scores[1:], start=2):
                values[f"label_{rank}"] = score.label
                values[f"probability_{rank}"] = f"{score.probability:.6f}"
        return [values[name] for name in self.header()]

    def record(self, row: Row) -> dict[str, Any]:
        """The JSON object: Prediction.to_record's (path and ranked predictions, or path and
        error), with the label after the path and this output's model, destination and
        embedding columns at the end."""
        prediction = Prediction(row.path, row.scores, row.error, row.embedding)
        wire = prediction.to_record(embedding=self.embedding)
        record: dict[str, Any] = {"path": wire.pop("path")}
        if self.multi_label and "predictions" in wire:
            wire.pop("predictions")
            record["labels"] = list(row.labels)
            found = {score.label: score.probability for score in row.scores}
            record["probabilities"] = {name: found[name] for name in self.multi_label}
        elif row.error is None and (self.best_label or self.model):
            record["label"] = row.label
        record.update((key, wire.pop(key)) for key in ("error", "predictions") if key in wire)
        if self.model:
            record["model"] = row.model
        if self.destination:
            record[self.destination] = path_to_text(row.destination)
        return record | wire  # the embedding, when asked for, comes last

    def typed_values(self, row: Row) -> dict[str, Any]:
        """One row for a typed table (Parquet): the CSV columns, numbers as numbers, None where
        a CSV cell is empty; the embedding as a list of floats."""
        text = dict(zip(self.header(), self.csv_values(row), strict=True))
        values: dict[str, Any] = {}
        for name, cell in text.items():
            if is_number_column(name):
                values[name] = float(cell) if cell else None
            else:
                values[name] = cell if cell or name in ("path", "model") else None
        if self.embedding:
            values["embedding"] = None if row.embedding is None else row.embedding.tolist()
        return values
