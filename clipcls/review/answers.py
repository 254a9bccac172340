"""An exported row keeps the model's answer beside the reviewer's: `model_label` and
`model_probability` as the run wrote them, and `probability`/`similarity` describing the row's
(corrected) `label`, so how often the model was wrong is counted from the export alone."""

from __future__ import annotations

from typing import Any

from clipcls.review.log import Decision

MODEL_COLUMNS = ("model_label", "model_probability")  # right after `label` in an export


def _model_scores(cells: dict[str, str]) -> dict[str, tuple[str, str]]:
    """A flat row's scores by label, (probability, similarity) cells, as far as the output holds
    them: the top answer's both (the `best_label` where the run gave another label), the
    ranked ones' probability only."""
    top = cells.get("best_label") or cells["label"]
    scores = {top: (cells["probability"], cells["similarity"])} if top else {}
    for name, label in cells.items():
        if name.startswith("label_") and label:
            scores.setdefault(label, (cells[f"probability_{name[6:]}"], ""))
    return scores


def corrected_cells(cells: dict[str, str], decision: Decision | None) -> dict[str, str]:
    """A flat row's cells for an export: the run's label and probability kept as
    model_label/model_probability; where the decision changed the label, probability and
    similarity are the model's for the new label where the row holds them (it was in the run's
    top-k), empty where it does not (ranked lower, or a label added during review)."""
    kept = cells | {"model_label": cells["label"], "model_probability": cells["probability"]}
    if decision is None or decision.label == cells["label"]:
        return kept
    probability, similarity = _model_scores(cells).get(decision.label, ("", ""))
    return kept | {"label": decision.label, "probability": probability, "similarity": similarity}


def model_answer(record: dict[str, Any]) -> dict[str, Any]:
    """A JSONL record's model answer: its label (else its top prediction's) and the top
    prediction's probability; both None for an error row."""
    predictions = record.get("predictions") or []
    top = predictions[0] if predictions and isinstance(predictions[0], dict) else {}
    label = record.get("label") or top.get("label")
    return {"model_label": label, "model_probability": top.get("probability")}
