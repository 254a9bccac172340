"""Evaluation results for the terminal: a softmax head's summary, per-class table, confusions,
comparisons and few-shot folds; an independent head's summary and per-label table."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import numpy as np
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.table import Table
from rich.text import Text

from clipcls.evaluation.exports import METHODS, headline, multi_label_calibration, percent
from clipcls.evaluation.fewshot import FewShotResult, chosen_text, spread
from clipcls.evaluation.results import Evaluation, MultiLabelEvaluation
from clipcls.multilabel.metrics import Counts
from clipcls.pathtext import path_to_text

FULL_MATRIX_MAX = 12  # wider matrices do not fit a terminal; list the top confusions instead
TOP_CONFUSIONS = 15


def _facts(rows: Iterable[tuple[str, str]], justify: JustifyMethod = "left") -> Table:
    """Name and value, a row each: a setup's headline numbers."""
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(justify=justify)
    for name, value in rows:
        table.add_row(name, value)
    return table


def summary_table(evaluation: Evaluation) -> Table:
    """Headline numbers for one setup."""
    metrics, data = evaluation.metrics, evaluation.data
    rows = [
        ("images scored", str(len(data.paths))),
        ("unreadable", str(len(data.failures))),
        ("classes", str(len(evaluation.labels))),
        *((name, percent(value)) for name, value in headline(metrics)),
    ]
    return _facts(rows, justify="right")


def per_class_table(evaluation: Evaluation) -> Table:
    """Precision, recall, F1 and support per class, in the class order of the JSON, the report
    and the confusion matrix (the class folders' sorted order)."""
    table = Table(header_style="bold")
    for name, justify in (
        ("class", "left"),
        ("images", "right"),
        ("precision", "right"),
        ("recall", "right"),
        ("F1", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for label, metrics in zip(evaluation.labels, evaluation.metrics.per_class, strict=True):
        table.add_row(
            Text(label.name),
            str(metrics.support),
            percent(metrics.precision),
            percent(metrics.recall),
            percent(metrics.f1),
        )
    return table


def confusion_view(evaluation: Evaluation) -> RenderableType:
    """The full matrix for a few classes; the most frequent confusions for many."""
    matrix = evaluation.metrics.confusion_matrix
    names = [label.name for label in evaluation.labels]
    if len(names) <= FULL_MATRIX_MAX:
        table = Table(header_style="bold")
        table.add_column("true \\ predicted")
        for index in range(len(names)):
            table.add_column(str(index), justify="right")
        for index, (name, row) in enumerate(zip(names, matrix, strict=True)):
            cells = [
                Text(str(v), style="bold green" if i == index and v else "dim" if not v else "")
                for i, v in enumerate(row)
            ]
            table.add_row(Text(f"{index} {name}"), *cells)
        return Group(Text("confusion matrix (rows: true class, columns: predicted)", "bold"), table)
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:TOP_CONFUSIONS]
    title = Text(
        f"most frequent confusions ({len(names)} classes; the full matrix is in "
        "--format json and --report)",
        "bold",
    )
    table = Table(header_style="bold")
    table.add_column("true class")
    table.add_column("predicted as")
    table.add_column("images", justify="right")
    for flat in order:
        true, predicted = divmod(int(flat), len(names))
        if off[true, predicted]:
            table.add_row(Text(names[true]), Text(names[predicted]), str(off[true, predicted]))
    return Group(title, table)


def single(evaluation: Evaluation) -> Group:
    """Everything for one setup."""
    return Group(
        Text(evaluation.name, "bold"),
        summary_table(evaluation),
        "",
        per_class_table(evaluation),
        "",
        confusion_view(evaluation),
    )


METRIC_HEADERS = ("top-1", "top-5", "balanced acc.", "macro F1")


def comparison(evaluations: Sequence[Evaluation], width: int = 200) -> RenderableType:
    """Setups side by side, the best top-1 in bold. Where model and template names do not fit
    the width unbroken, each setup is a number in the table and a line of its own below it:
    Rich would fold `ViT-B-16:openai` or a header inside the word."""
    best = max(evaluations, key=lambda e: e.metrics.top1 or 0.0)
    table = _comparison_table(evaluations, best, ("model", "templates"))
    drawn = Console(width=width, file=io.StringIO(), color_system=None)
    drawn.print(table)
    shown = drawn.file.getvalue()  # type: ignore[attr-defined]
    words = [w for name in METRIC_HEADERS for w in name.split()]
    names = [n for e in evaluations for n in (e.model_id, e.templates.name)]
    if all(word in shown.split() for word in words) and all(n in shown for n in names):
        return table  # nothing folded, cut off or left out
    numbered = _comparison_table(evaluations, best, ("#",))
    legend = [
        Text(f"{index} = {evaluation.name}", style="bold" if evaluation is best else "")
        for index, evaluation in enumerate(evaluations, start=1)
    ]
    return Group(numbered, *legend)


def _comparison_table(
    evaluations: Sequence[Evaluation], best: Evaluation, names: tuple[str, ...]
) -> Table:
    """The comparison with the setup in the named columns: model and templates, or a number."""
    table = Table(header_style="bold")
    for name in names:
        table.add_column(name, no_wrap=True)
    for name in METRIC_HEADERS:  # a header may wrap at its space, never inside a word
        table.add_column(name, justify="right", min_width=max(map(len, name.split())))
    for index, evaluation in enumerate(evaluations, start=1):
        metrics = evaluation.metrics
        setup = (
            [Text(evaluation.model_id), Text(evaluation.templates.name)]
            if len(names) == 2
            else [str(index)]
        )
        table.add_row(
            *setup,
            percent(metrics.top1),
            percent(metrics.top_k.get(5)),
            percent(metrics.balanced_accuracy),
            percent(metrics.macro_f1),
            style="bold" if evaluation is best else "",
        )
    return table


FEW_SHOT_HEADERS = {"top1": "top-1", "balanced_accuracy": "balanced acc.", "ece": "ECE"}


def _spread_text(values: Sequence[float | None]) -> str:
    """One fold's value as it is; several as mean ± std (min–max)."""
    found = spread(values)
    if len(values) == 1 or found["mean"] is None:
        return percent(values[0] if len(values) == 1 else None)
    low, high = percent(found["min"]), percent(found["max"])  # type: ignore[arg-type]
    return f"{percent(found['mean'])} ± {percent(found['std'])} ({low}–{high})"  # type: ignore[arg-type]


def few_shot_view(result: FewShotResult) -> RenderableType:
    """Zero-shot and with support side by side, and what the cache model chose."""
    plan = result.plan
    if plan.support is None:
        title = (
            f"few-shot: {plan.shots} support images per class drawn, the rest scored; "
            f"{plan.folds} folds (seed {plan.seed}), mean ± std (min–max) over folds"
        )
    else:
        folder = path_to_text(str(plan.support.folder))
        title = f"support set {folder}: {result.examples} images, every image scored"
    table = Table(header_style="bold")
    table.add_column("setup")
    names = list(next(iter(result.setups.values())))
    for name in names:
        table.add_column(FEW_SHOT_HEADERS.get(name, name.replace("top", "top-")), justify="right")
    for setup, metrics in result.setups.items():
        table.add_row(setup, *(_spread_text(metrics[name]) for name in names))
    chosen = chosen_text(result)
    lines = [Text(f"cache model alpha/beta (leave-one-out): {chosen}")] if chosen else []
    return Group(Text(title, "bold"), table, *lines)


def calibration_line(evaluation: Evaluation, named: bool = False) -> Text:
    """The setup's calibration error in one line (and what --calibrate changed)."""
    found, fitted = evaluation.reliability, evaluation.calibrated
    which = f" of {evaluation.name}" if named else ""
    line = f"calibration{which}: ECE {percent(found.ece)} over {len(evaluation.data.paths)} images"
    if fitted is not None:
        line += f" -> {percent(fitted.ece_after)} at temperature {fitted.temperature:g}"
    return Text(line)


def print_results(console: Console, evaluations: Sequence[Evaluation]) -> None:
    """One setup in full, several side by side; then the comparison with a support set and
    the calibration error of each."""
    if len(evaluations) == 1:
        console.print(single(evaluations[0]))
    else:
        console.print(comparison(evaluations, console.width))
    several = len(evaluations) > 1
    for evaluation in evaluations:
        if evaluation.few_shot is not None:
            console.print("")
            if several:
                console.print(Text(evaluation.name, "bold"))
            console.print(few_shot_view(evaluation.few_shot))
    console.print("")
    for evaluation in evaluations:
        console.print(calibration_line(evaluation, several))


def multi_label_summary(evaluation: MultiLabelEvaluation) -> Table:
    """Headline numbers: the images, the method, mAP, and the counts at the threshold."""
    metrics = evaluation.metrics
    threshold = f"{metrics.thresholds[0]:g}"
    rows = (
        ("images scored", str(len(evaluation.paths))),
        ("unreadable", str(len(evaluation.failures))),
        ("labels", str(len(evaluation.labels))),
        ("probabilities", METHODS.get(evaluation.method, evaluation.method)),
        ("mAP (macro)", percent(metrics.mean_ap)),
        ("micro AP", percent(metrics.micro_ap)),
        (f"micro precision / recall / F1 at {threshold}", _triple(metrics.micro)),
        (f"macro precision / recall / F1 at {threshold}", _triple(metrics.macro)),
    )
    return _facts(rows)


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
        cells = (percent(v) for v in (counts.precision, counts.recall, counts.f1))
        table.add_row(Text(name), str(m.positives), percent(m.ap), *cells)
    return table


def print_multi_label(console: Console, evaluation: MultiLabelEvaluation) -> None:
    """The summary and the per-label table, then what --calibrate fitted."""
    title = f"{evaluation.name} (multi-label, {path_to_text(str(evaluation.source))})"
    console.print(
        Group(Text(title, "bold"), multi_label_summary(evaluation), "", per_label_table(evaluation))
    )
    line = multi_label_calibration(evaluation)
    if line is not None:
        console.print("")
        console.print(Text(f"calibration: {line}"))
