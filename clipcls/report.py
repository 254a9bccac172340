"""A self-contained HTML evaluation report: heat map, per-class bars, misclassified gallery."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipcls.errors import ImageError, UsageError
from clipcls.evaluation import Evaluation, headline, percent
from clipcls.images import load_image
from clipcls.pathtext import path_to_text
from clipcls.rows import clean_text

GALLERY_MAX = 60
THUMBNAIL = 180


def require_matplotlib() -> None:
    """Fail early, before any model loads, if the report cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--report needs matplotlib: pip install 'clipcls[report]'") from None


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def heat_map(evaluation: Evaluation) -> str:
    """Confusion matrix, colored by share of each true class, counts written in small ones."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

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
    try:
        return _png(figure)
    finally:
        plt.close(figure)


def class_bars(evaluation: Evaluation) -> str:
    """Recall and precision per class as horizontal bars, worst recall at the top."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

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
    axes.legend(loc="lower right")
    try:
        return _png(figure)
    finally:
        plt.close(figure)


def _thumbnail(path: str) -> str | None:
    try:
        image = load_image(path)
    except ImageError:
        return None
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def gallery(evaluation: Evaluation) -> str:
    """The most confident mistakes as thumbnails with true and predicted labels."""
    names = [clean_text(label.name) for label in evaluation.labels]
    probabilities = evaluation.probabilities
    if not len(probabilities):
        return "<p>No readable images.</p>"
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != evaluation.data.targets)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")]
    cards = []
    for i in wrong[:GALLERY_MAX]:
        source = _thumbnail(evaluation.data.paths[i])
        true = names[evaluation.data.targets[i]]
        guess, probability = names[predicted[i]], probabilities[i, predicted[i]]
        truth = probabilities[i, evaluation.data.targets[i]]
        picture = f'<img src="{source}" alt="">' if source else "<div>(unreadable)</div>"
        cards.append(
            f"<figure>{picture}<figcaption><b>{html.escape(guess)}</b> {probability:.0%}"
            f"<br>true: {html.escape(true)} {truth:.0%}"
            f"<br><small>{html.escape(path_to_text(evaluation.data.paths[i]))}</small>"
            "</figcaption></figure>"
        )
    more = len(wrong) - GALLERY_MAX
    tail = f"<p>and {more} more (see --predictions).</p>" if more > 0 else ""
    if not cards:
        return "<p>No misclassified images.</p>"
    return f'<div class="gallery">{"".join(cards)}</div>{tail}'


def _metric_rows(evaluation: Evaluation) -> str:
    rows = headline(evaluation.metrics)
    return "".join(f"<tr><th>{name}</th><td>{percent(v)}</td></tr>" for name, v in rows)


def _comparison(evaluations: Sequence[Evaluation]) -> str:
    if len(evaluations) < 2:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(e.name)}</td><td>{percent(e.metrics.top1)}</td>"
        f"<td>{percent(e.metrics.balanced_accuracy)}</td></tr>"
        for e in evaluations
    )
    return (
        "<h2>Setups compared</h2><table><tr><th>setup</th><th>top-1</th>"
        f"<th>balanced accuracy</th></tr>{rows}</table>"
    )


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; width: 190px; font-size: 13px; }
figure img { max-width: 180px; max-height: 180px; display: block; }
small { color: #777; word-break: break-all; }
img.plot { max-width: 100%; }
"""


def write_report(page: Path, evaluations: Sequence[Evaluation], dataset: Path) -> None:
    """Write one self-contained HTML page: every setup compared, the best one in detail."""
    import matplotlib

    # Class names are folder names: `$x$` in one must print as written, not as math.
    with matplotlib.rc_context({"text.parse_math": False}):
        page.write_text(clean_text(_page(evaluations, dataset)), encoding="utf-8")


def _page(evaluations: Sequence[Evaluation], dataset: Path) -> str:
    best = max(evaluations, key=lambda e: e.metrics.top1 or 0.0)
    failures = "".join(
        f"<li>{html.escape(path_to_text(path))}: {html.escape(clean_text(error))}</li>"
        for path, _, error in best.data.failures
    )
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clipcls evaluation</title>
<style>{STYLE}</style></head><body>
<h1>Zero-shot evaluation of {html.escape(str(dataset))}</h1>
<p>{html.escape(best.name)}: {len(best.data.paths)} images scored,
{len(best.data.failures)} unreadable, {len(best.labels)} classes.</p>
{_comparison(evaluations)}
<h2>Summary</h2><table>{_metric_rows(best)}</table>
<h2>Confusion matrix</h2><img class="plot" alt="confusion matrix" src="{heat_map(best)}">
<h2>Per class</h2><img class="plot" alt="per-class recall and precision" src="{class_bars(best)}">
<h2>Most confident mistakes</h2>{gallery(best)}
<h2>Unreadable files</h2>{f"<ul>{failures}</ul>" if failures else "<p>None.</p>"}
</body></html>
"""
    return body
