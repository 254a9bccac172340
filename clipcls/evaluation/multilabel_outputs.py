"""A multi-label evaluation's results: the JSON report, the tables for people, and the per-image
CSV of every label's probability."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from rich.console import Group
from rich.table import Table
from rich.text import Text

from clipcls.evaluation.exports import percent
from clipcls.evaluation.multilabel import MultiLabelEvaluation
from clipcls.multilabel.metrics import Counts
from clipcls.multilabel.truth import SEPARATOR
from clipcls.output.csv_text import SafeCsv
from clipcls.output.formats import Format
from clipcls.output.rows import clean_text
from clipcls.output.writers import plain_console
from clipcls.pathtext import path_to_text

METHODS = {
    "sigmoid": "the model's own sigmoid (scale x cosine + bias)",
    "background": "each label against a background prompt (two-way softmax)",
    "logistic": "a logistic per label fitted on labeled images",
}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


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


def report(evaluation: MultiLabelEvaluation) -> dict[str, Any]:
    """The JSON report of a multi-label evaluation."""
    document: dict[str, Any] = {
        "multi_label": multi_label_json(evaluation),
        "n_images": len(evaluation.paths),
        "n_failed": len(evaluation.failures),
        "labels": evaluation.names,
        "model": evaluation.model,
        "pretrained": evaluation.pretrained,
        "templates": {
            "name": evaluation.templates.name,
            "templates": list(evaluation.templates.templates),
        },
        "labelnames": {label.name: list(label.texts) for label in evaluation.labels},
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


def summary(evaluation: MultiLabelEvaluation) -> Table:
    """Headline numbers: the images, the method, mAP, and the counts at the threshold."""
    metrics = evaluation.metrics
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    threshold = f"{metrics.thresholds[0]:g}"
    for name, value in (
        ("images scored", str(len(evaluation.paths))),
        ("unreadable", str(len(evaluation.failures))),
        ("labels", str(len(evaluation.labels))),
        ("probabilities", METHODS.get(evaluation.method, evaluation.method)),
        ("mAP (macro)", percent(metrics.mean_ap)),
        ("micro AP", percent(metrics.micro_ap)),
        (f"micro precision / recall / F1 at {threshold}", _triple(metrics.micro)),
        (f"macro precision / recall / F1 at {threshold}", _triple(metrics.macro)),
    ):
        table.add_row(name, value)
    return table


def _triple(counts: Counts) -> str:
    return " / ".join(percent(v) for v in (counts.precision, counts.recall, counts.f1))


def per_label_table(evaluation: MultiLabelEvaluation) -> Table:
    """AP, positives, and precision, recall and F1 at the threshold, in label order."""
    table = Table(header_style="bold")
    table.add_column("label")
    for name in ("images", "AP", "precision", "recall", "F1"):
        table.add_column(name, justify="right")
    for name, m in zip(evaluation.names, evaluation.metrics.per_label, strict=True):
        counts = m.at_threshold
        table.add_row(
            Text(name),
            str(m.positives),
            percent(m.ap),
            *(percent(v) for v in (counts.precision, counts.recall, counts.f1)),
        )
    return table


def calibration_line(evaluation: MultiLabelEvaluation) -> str | None:
    """What --calibrate fitted, in one line (None without it)."""
    fitted = evaluation.calibrated
    if fitted is None:
        return None
    target = fitted.calibration.target_precision
    rule = "the best F1" if target is None else f"precision {target:g}"
    kept = " (the model's sigmoid is kept; thresholds only)" if fitted.method == "sigmoid" else ""
    return (
        f"log-loss {fitted.log_loss_before:.4f} -> {fitted.log_loss_after:.4f}"
        f"{kept}; {fitted.reached} of {len(evaluation.labels)} labels have a threshold at {rule}"
    )


def write_multilabel_results(
    stream: TextIO, evaluation: MultiLabelEvaluation, kind: Format
) -> None:
    """The report as JSON, or as tables for people (Format.TABLE)."""
    if not kind.for_people:
        text = json.dumps(report(evaluation), indent=2, ensure_ascii=False)
        stream.write(clean_text(text) + "\n")
        return
    console = plain_console(file=stream)
    title = f"{evaluation.name} (multi-label, {path_to_text(str(evaluation.source))})"
    console.print(Group(Text(title, "bold"), summary(evaluation), "", per_label_table(evaluation)))
    line = calibration_line(evaluation)
    if line is not None:
        console.print("")
        console.print(Text(f"calibration: {line}"))


def write_multilabel_predictions(path: Path, evaluation: MultiLabelEvaluation) -> None:
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
