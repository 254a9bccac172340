"""Evaluation results as data: the JSON report, the headline metrics, per-image predictions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipcls.evaluation.fewshot import few_shot_json
from clipcls.evaluation.metrics import Metrics
from clipcls.evaluation.scoring import Evaluation
from clipcls.output.csv_text import SafeCsv
from clipcls.output.rows import clean_text
from clipcls.pathtext import path_to_text


def percent(value: float | None) -> str:
    """A metric for people: 81.3%, or a dash where it is undefined."""
    return "—" if value is None else f"{value:.1%}"


def headline(metrics: Metrics) -> list[tuple[str, float | None]]:
    """The summary metrics in the order every report shows them."""
    return [
        ("top-1 accuracy", metrics.top1),
        *((f"top-{k} accuracy", v) for k, v in sorted(metrics.top_k.items())),
        ("balanced accuracy", metrics.balanced_accuracy),
        ("macro precision", metrics.macro_precision),
        ("macro recall", metrics.macro_recall),
        ("macro F1", metrics.macro_f1),
    ]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def report(evaluation: Evaluation) -> dict[str, Any]:
    """The JSON report: exactly the documented keys (plus topK for extra --top-k values)."""
    metrics = evaluation.metrics
    classes = [label.name for label in evaluation.labels]
    extra = {f"top{k}": _round(v) for k, v in metrics.top_k.items() if k != 5}
    return {
        "top1": _round(metrics.top1),
        "top5": _round(metrics.top_k.get(5)),
        **extra,
        "balanced_accuracy": _round(metrics.balanced_accuracy),
        "macro_precision": _round(metrics.macro_precision),
        "macro_recall": _round(metrics.macro_recall),
        "macro_f1": _round(metrics.macro_f1),
        "n_images": len(evaluation.data.paths),
        "n_failed": len(evaluation.data.failures),
        "classes": classes,
        "per_class": {
            name: {
                "precision": _round(m.precision),
                "recall": _round(m.recall),
                "f1": _round(m.f1),
                "support": m.support,
            }
            for name, m in zip(classes, metrics.per_class, strict=True)
        },
        "confusion_matrix": metrics.confusion_matrix.tolist(),
        "model": evaluation.model,
        "pretrained": evaluation.pretrained,
        "templates": {
            "name": evaluation.templates.name,
            "templates": list(evaluation.templates.templates),
        },
        "classnames": {label.name: list(label.texts) for label in evaluation.labels},
        "calibration": calibration_json(evaluation),
        **({"few_shot": few_shot_json(evaluation.few_shot)} if evaluation.few_shot else {}),
    }


def calibration_json(evaluation: Evaluation) -> dict[str, Any]:
    """The reported setup's calibration error and reliability bins; with --calibrate, what was
    fitted (the temperature, the error after it, each label's threshold)."""
    found = evaluation.reliability
    bins = [
        {"low": round(low, 6), "confidence": round(conf, 6), "accuracy": round(acc, 6), "count": n}
        for low, conf, acc, n in found.bins
    ]
    document: dict[str, Any] = {"ece": found.ece, "bins": bins}
    fitted = evaluation.calibrated
    if fitted is not None:
        document |= {
            "temperature": fitted.temperature,
            "ece_after": fitted.ece_after,
            "target_precision": fitted.target_precision,
            "thresholds": dict(fitted.thresholds),
        }
    return document


def prediction_rows(evaluation: Evaluation) -> list[list[str]]:
    """Per-image rows: path, true class, predicted class, probability, correct, error."""
    classes = [label.name for label in evaluation.labels]
    rows = []
    best = evaluation.probabilities.argmax(axis=1) if len(evaluation.probabilities) else []
    for i, path in enumerate(evaluation.data.paths):
        true, predicted = int(evaluation.data.targets[i]), int(best[i])
        probability = float(evaluation.probabilities[i, predicted])
        rows.append(
            [
                path,
                classes[true],
                classes[predicted],
                f"{probability:.6f}",
                str(true == predicted).lower(),
                "",
            ]
        )
    for path, target, error in evaluation.data.failures:
        rows.append([path, classes[target], "", "", "", error])
    return rows


def _text(value: object) -> object:
    return clean_text(value) if isinstance(value, str) else value


def _clean(document: Any) -> Any:
    """A JSON document whose strings are all valid UTF-8 (undecodable name bytes as \\xNN)."""
    if isinstance(document, dict):
        return {_clean(key): _clean(value) for key, value in document.items()}
    if isinstance(document, list | tuple):
        return [_clean(value) for value in document]
    return _text(document)


def write_predictions(path: Path, evaluations: Sequence[Evaluation]) -> None:
    """One CSV row per image and setup: path, true and predicted class, probability, error."""
    several = len(evaluations) > 1
    head = ["path", "true_class", "predicted_class", "probability", "correct", "error"]
    head += ["setup"] if several else []
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = SafeCsv(stream, head)  # text cells escaped as label's CSV (csv_text)
        writer.header(head)
        for evaluation in evaluations:
            for row in prediction_rows(evaluation):
                values = [path_to_text(row[0]), *(clean_text(value) for value in row[1:])]
                writer.row(values + ([clean_text(evaluation.name)] if several else []))


def json_document(evaluations: Sequence[Evaluation]) -> str:
    """The JSON report of one setup, or a list of them, as valid UTF-8 text for any name."""
    reports = [report(e) for e in evaluations]
    document = reports[0] if len(reports) == 1 else reports
    return json.dumps(_clean(document), indent=2, ensure_ascii=False)
