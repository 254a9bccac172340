"""The report's figures, drawn with matplotlib as PNG data: URIs: a softmax head's confusion
heat map, per-class bars and reliability diagram; an independent head's precision-recall
curves."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from clipcls.errors import UsageError
from clipcls.evaluation.exports import percent
from clipcls.evaluation.results import Evaluation, MultiLabelEvaluation
from clipcls.fewshot.calibration import BINS
from clipcls.multilabel.metrics import precision_recall_curve
from clipcls.output.rows import clean_text

CURVES_PER_FIGURE = 10  # more lines than the colour cycle are unreadable: one figure per ten


def require_matplotlib() -> None:
    """Fail early, before any model loads, if the report cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--report needs matplotlib: pip install 'clipcls[report]'") from None


def _pyplot() -> Any:
    """matplotlib's pyplot drawing off-screen (Agg), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def png_data(figure: Any) -> str:
    """A figure as a PNG data: URI, for a page that needs no other file; the figure closed."""
    try:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    finally:
        _pyplot().close(figure)


def heat_map(evaluation: Evaluation) -> str:
    """Confusion matrix, colored by share of each true class, counts written in small ones."""
    plt = _pyplot()
    matrix = evaluation.metrics.confusion_matrix
    names = [clean_text(label.name) for label in evaluation.labels]
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    side = min(4 + 0.35 * len(names), 22)
    figure, axes = plt.subplots(figsize=(side + 1.5, side))
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if len(names) <= 20:
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                color = "white" if shares[i, j] > 0.5 else "black"
                axes.text(j, i, str(count), ha="center", va="center", fontsize=8, color=color)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the true class")
    return png_data(figure)


def class_bars(evaluation: Evaluation) -> str:
    """Recall and precision per class as horizontal bars, worst recall at the top."""
    plt = _pyplot()
    pairs = sorted(
        zip(evaluation.labels, evaluation.metrics.per_class, strict=True),
        key=lambda p: -(p[1].recall or 0.0),
    )
    names = [f"{clean_text(label.name)} ({m.support})" for label, m in pairs]
    positions = np.arange(len(names))
    figure, axes = plt.subplots(figsize=(8, 1 + 0.32 * len(names)))
    axes.barh(positions - 0.2, [m.recall or 0 for _, m in pairs], 0.4, label="recall")
    axes.barh(positions + 0.2, [m.precision or 0 for _, m in pairs], 0.4, label="precision")
    axes.set_yticks(positions, names, fontsize=8)
    axes.set_xlim(0, 1)
    axes.set_xlabel("score (class support in brackets)")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)  # off the bars
    return png_data(figure)


def reliability_diagram(evaluation: Evaluation) -> str:
    """Accuracy per confidence bin as bars against the diagonal of perfect calibration."""
    plt = _pyplot()
    found = evaluation.reliability
    figure, axes = plt.subplots(figsize=(5, 5))
    width = 1.0 / BINS
    lows = [low for low, _, _, _ in found.bins]
    axes.bar(lows, [acc for _, _, acc, _ in found.bins], width, align="edge", label="accuracy")
    axes.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    axes.plot(
        [conf for _, conf, _, _ in found.bins],
        [acc for _, _, acc, _ in found.bins],
        "o",
        color="black",
        label="each bin at its mean confidence",
    )
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("top-1 confidence")
    axes.set_ylabel("accuracy")
    axes.set_title(f"ECE {percent(found.ece)}")
    axes.legend(loc="upper left", frameon=False)
    return png_data(figure)


def pr_curves(evaluation: MultiLabelEvaluation) -> list[str]:
    """Each label's precision-recall curve (a step per threshold, as AP sums it), with its AP
    in the legend; up to ten labels a figure."""
    plt = _pyplot()
    figures = []
    names = evaluation.names
    for start in range(0, len(names), CURVES_PER_FIGURE):
        figure, axes = plt.subplots(figsize=(6, 5))
        for j in range(start, min(start + CURVES_PER_FIGURE, len(names))):
            precision, recall, _ = precision_recall_curve(
                evaluation.truth[:, j], evaluation.probabilities[:, j]
            )
            ap = evaluation.metrics.per_label[j].ap
            label = f"{clean_text(names[j])} (AP {ap:.1%})"
            axes.step(recall, precision, where="post", label=label)
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.02)
        axes.set_xlabel("recall")
        axes.set_ylabel("precision")
        axes.set_title(f"mAP {percent(evaluation.metrics.mean_ap)}")
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
        figures.append(png_data(figure))
    return figures
