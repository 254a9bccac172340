"""A self-contained HTML evaluation report: heat map, per-class bars, reliability diagram,
misclassified gallery."""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipcls.errors import ImageError, UsageError
from clipcls.evaluation.exports import headline, percent
from clipcls.evaluation.html_fewshot import calibration_section, few_shot_table
from clipcls.evaluation.scoring import Evaluation
from clipcls.fewshot.calibration import BINS
from clipcls.images import load_image
from clipcls.output.rows import clean_text
from clipcls.pathtext import path_to_text
from clipcls.version import __version__

GALLERY_MAX = 60
THUMBNAIL = 180


def require_matplotlib() -> None:
    """Fail early, before any model loads, if the report cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--report needs matplotlib: pip install 'clipcls[report]'") from None


def png_data(figure: Any) -> str:
    """A figure as a PNG data: URI, for a page that needs no other file."""
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
        return png_data(figure)
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
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)  # off the bars
    try:
        return png_data(figure)
    finally:
        plt.close(figure)


def reliability_diagram(evaluation: Evaluation) -> str:
    """Accuracy per confidence bin as bars against the diagonal of perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

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
    try:
        return png_data(figure)
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


def _comparison(evaluations: Sequence[Evaluation], best: Evaluation) -> str:
    """Every setup's headline metrics, the best (by top-1) marked."""
    names = [name for name, _ in headline(best.metrics)]
    head = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    rows = "".join(
        f"<tr{' class=best' if e is best else ''}><td>{html.escape(e.name)}</td>"
        + "".join(f"<td>{percent(value)}</td>" for _, value in headline(e.metrics))
        + "</tr>"
        for e in evaluations
    )
    title = "Setups compared" if len(evaluations) > 1 else "Summary"
    return f"<h2>{title}</h2><table><tr><th>setup</th>{head}</tr>{rows}</table>"


def _per_class(evaluation: Evaluation) -> str:
    """Precision, recall, F1 and support per class, a dash where a value is undefined."""
    rows = "".join(
        f"<tr><td>{html.escape(label.name)}</td><td>{percent(m.precision)}</td>"
        f"<td>{percent(m.recall)}</td><td>{percent(m.f1)}</td><td>{m.support}</td></tr>"
        for label, m in zip(evaluation.labels, evaluation.metrics.per_class, strict=True)
    )
    return (
        "<table class=numbers><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
        f"<th>support</th></tr>{rows}</table>"
    )


def _run_facts(evaluations: Sequence[Evaluation], dataset: Path) -> str:
    """What a reader needs to reproduce the page: when, which clipcls, models, prompts."""
    best = evaluations[0]
    models = sorted({e.model_id for e in evaluations})
    template_sets = {e.templates.name: e.templates.templates for e in evaluations}
    templates = "".join(
        f"<li><b>{html.escape(name)}</b>: "
        + " · ".join(f"<code>{html.escape(t)}</code>" for t in texts)
        + "</li>"
        for name, texts in template_sets.items()
    )
    classes = "".join(
        f"<li><b>{html.escape(label.name)}</b>: {html.escape(' | '.join(label.texts))}</li>"
        for label in best.labels
    )
    when = time.strftime("%Y-%m-%d %H:%M:%S %z")
    return f"""<h2>Run</h2><table>
<tr><th>date</th><td>{when}</td></tr>
<tr><th>clipcls</th><td>{__version__}</td></tr>
<tr><th>dataset</th><td>{html.escape(path_to_text(str(dataset)))}</td></tr>
<tr><th>model and weights</th><td>{html.escape(", ".join(models))}</td></tr></table>
<details><summary>Templates</summary><ul>{templates}</ul></details>
<details><summary>Each class's texts</summary><ul>{classes}</ul></details>"""


def _failures(evaluation: Evaluation) -> str:
    """Each unreadable file once, with the reason (its path is not repeated)."""
    items = []
    for path, _, error in evaluation.data.failures:
        reason = error.replace(f": {path}", "").replace(path, "").strip(" :")
        items.append(f"<li>{html.escape(path_to_text(path))}: {html.escape(reason)}</li>")
    return f"<ul>{''.join(items)}</ul>" if items else "<p>None.</p>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
table.numbers td:not(:first-child), tr td { font-variant-numeric: tabular-nums; }
tr.best td { background: #eef6ee; font-weight: 600; }
.plots { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; width: 190px; font-size: 13px; }
figure img { max-width: 180px; max-height: 180px; display: block; }
small { color: #777; word-break: break-all; }
img.plot { max-width: 100%; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def write_report(page: Path, evaluations: Sequence[Evaluation], dataset: Path) -> None:
    """Write one self-contained HTML page: every setup compared, the best one in detail."""
    import matplotlib

    # Class names are folder names: `$x$` in one must print as written, not as math.
    with matplotlib.rc_context({"text.parse_math": False}):
        page.write_text(clean_text(_page(evaluations, dataset)), encoding="utf-8")


def _page(evaluations: Sequence[Evaluation], dataset: Path) -> str:
    best = max(evaluations, key=lambda e: e.metrics.top1 or 0.0)
    several = len(evaluations) > 1
    detail = f"Details for: {html.escape(best.name)}" + (" (best top-1)" if several else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clipcls evaluation</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head><body>
<h1>Zero-shot evaluation of {html.escape(path_to_text(str(dataset)))}</h1>
<p>{len(best.data.paths)} images scored, {len(best.data.failures)} unreadable,
{len(best.labels)} classes, {len(evaluations)} setup{"s" if several else ""}.</p>
{_comparison(evaluations, best)}
{few_shot_table(best.few_shot) if best.few_shot is not None else ""}
<h2>{detail}</h2>
<h3>Per class</h3>
<div class="plots">{_per_class(best)}
<img class="plot" alt="per-class recall and precision" src="{class_bars(best)}"></div>
<h3>Confusion matrix</h3><img class="plot" alt="confusion matrix" src="{heat_map(best)}">
{calibration_section(best, reliability_diagram(best))}
<h3>Most confident mistakes</h3>{gallery(best)}
<h3>Unreadable files</h3>{_failures(best)}
{_run_facts(evaluations, dataset)}
</body></html>
"""
