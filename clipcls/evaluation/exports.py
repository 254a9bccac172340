"""Evaluation results as data: the JSON report and the per-image predictions CSV of either
head's evaluation, and the numbers and words every report shows alike."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipcls.evaluation.fewshot import few_shot_json
from clipcls.evaluation.metrics import Metrics
from clipcls.evaluation.results import Evaluation, MultiLabelEvaluation, Setup
from clipcls.multilabel.metrics import Counts
from clipcls.multilabel.truth import SEPARATOR
from clipcls.output.csv_text import SafeCsv
from clipcls.output.rows import clean_text
from clipcls.pathtext import path_to_text
from clipcls.scoring.heads import SIGMOID

METHODS = {
    "sigmoid": "the model's own sigmoid (scale x cosine + bias)",
    "background": "each label against a background prompt (two-way softmax)",
    "logistic": "a logistic per label fitted on labeled images",
}


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
        **_prompts(evaluation, "classnames"),
        "calibration": calibration_json(evaluation),
        **({"few_shot": few_shot_json(evaluation.few_shot)} if evaluation.few_shot else {}),
    }


def _prompts(setup: Setup, texts: str) -> dict[str, Any]:
    """The model, the template set, and each label's texts under the key `texts`."""
    return {
        "model": setup.model,
        "pretrained": setup.pretrained,
        "templates": {"name": setup.templates.name, "templates": list(setup.templates.templates)},
        texts: {label.name: list(label.texts) for label in setup.labels},
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


def json_text(document: Any) -> str:
    """A JSON report as valid UTF-8 text for any name."""
    return json.dumps(_clean(document), indent=2, ensure_ascii=False)


def json_document(evaluations: Sequence[Evaluation]) -> str:
    """The JSON report of one setup, or a list of them."""
    reports = [report(e) for e in evaluations]
    return json_text(reports[0] if len(reports) == 1 else reports)


def _counts(counts: Counts) -> dict[str, float | None]:
    return {
        "precision": _round(counts.precision),
        "recall": _round(counts.recall),
        "f1": _round(counts.f1),
    }


def multi_label_json(evaluation: MultiLabelEvaluation) -> dict[str, Any]:
    """The `multi_label` block: mAP, each label's AP and counts, micro and macro counts."""
    metrics = evaluation.metrics
    per_label = {
        name: {"ap": _round(m.ap), **_counts(m.at_threshold), "positives": m.positives}
        for name, m in zip(evaluation.names, metrics.per_label, strict=True)
    }
    return {
        "map": _round(metrics.mean_ap),
        "per_label": per_label,
        "threshold": metrics.thresholds[0] if metrics.thresholds else None,
        "micro": {"ap": _round(metrics.micro_ap), **_counts(metrics.micro)},
        "macro": _counts(metrics.macro),
        "method": evaluation.method,
    }


def multi_label_report(evaluation: MultiLabelEvaluation) -> dict[str, Any]:
    """The JSON report of a multi-label evaluation (with what --calibrate fitted)."""
    document: dict[str, Any] = {
        "multi_label": multi_label_json(evaluation),
        "n_images": len(evaluation.paths),
        "n_failed": len(evaluation.failures),
        "labels": evaluation.names,
        **_prompts(evaluation, "labelnames"),
    }
    fitted = evaluation.calibrated
    if fitted is not None:
        document["calibration"] = {
            "method": fitted.method,
            "log_loss_before": _round(fitted.log_loss_before),
            "log_loss_after": _round(fitted.log_loss_after),
            "target_precision": fitted.calibration.target_precision,
            "thresholds": fitted.thresholds,
        }
    return document


def multi_label_calibration(evaluation: MultiLabelEvaluation) -> str | None:
    """What --calibrate fitted, in one line (None without it)."""
    fitted = evaluation.calibrated
    if fitted is None:
        return None
    target = fitted.calibration.target_precision
    rule = "the best F1" if target is None else f"precision {target:g}"
    kept = " (the model's sigmoid is kept; thresholds only)" if fitted.method == SIGMOID else ""
    return (
        f"log-loss {fitted.log_loss_before:.4f} -> {fitted.log_loss_after:.4f}"
        f"{kept}; {fitted.reached} of {len(evaluation.labels)} labels have a threshold at {rule}"
    )


def write_multi_label_predictions(path: Path, evaluation: MultiLabelEvaluation) -> None:
    """One CSV row per image: path, true labels, the labels at the threshold, every label's
    probability (`prob:LABEL`, written exactly), and the error of an unreadable one."""
    names = evaluation.names
    head = ["path", "labels", "predicted", *(f"prob:{name}" for name in names), "error"]
    thresholds = evaluation.metrics.thresholds
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = SafeCsv(stream, head)
        writer.header([clean_text(name) for name in head])
        for i, image in enumerate(evaluation.paths):
            scores = evaluation.probabilities[i]
            true = [n for n, on in zip(names, evaluation.truth[i], strict=True) if on]
            given = [n for n, p, t in zip(names, scores, thresholds, strict=True) if p >= t]
            cells = [SEPARATOR.join(true), SEPARATOR.join(given)]
            numbers = [repr(float(p)) for p in scores]  # exact: mAP reproduces from the file
            writer.row([path_to_text(image), *map(clean_text, cells), *numbers, ""])
        for image, error in evaluation.failures:
            writer.row([path_to_text(image), "", "", *[""] * len(names), clean_text(error)])
