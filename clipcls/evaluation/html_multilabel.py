"""A self-contained HTML report of a multi-label evaluation: the summary, a per-label table of
AP and counts at the threshold, and every label's precision-recall curve."""

from __future__ import annotations

import html
import time
from pathlib import Path

from clipcls.evaluation.exports import percent
from clipcls.evaluation.html import STYLE, png_data
from clipcls.evaluation.multilabel import MultiLabelEvaluation
from clipcls.evaluation.multilabel_outputs import METHODS, calibration_line
from clipcls.multilabel.metrics import precision_recall_curve
from clipcls.output.rows import clean_text
from clipcls.pathtext import path_to_text
from clipcls.version import __version__

CURVES_PER_FIGURE = 10  # more lines than the colour cycle are unreadable: one figure per ten


def pr_curves(evaluation: MultiLabelEvaluation) -> list[str]:
    """Each label's precision-recall curve (a step per threshold, as AP sums it), with its AP
    in the legend; up to ten labels a figure."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

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
        try:
            figures.append(png_data(figure))
        finally:
            plt.close(figure)
    return figures


def _per_label(evaluation: MultiLabelEvaluation) -> str:
    """AP, positives and the counts at the threshold per label, a dash where undefined."""
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{m.positives}</td><td>{percent(m.ap)}</td>"
        + "".join(
            f"<td>{percent(v)}</td>"
            for v in (m.at_threshold.precision, m.at_threshold.recall, m.at_threshold.f1)
        )
        + "</tr>"
        for name, m in zip(evaluation.names, evaluation.metrics.per_label, strict=True)
    )
    threshold = f"{evaluation.metrics.thresholds[0]:g}"
    return (
        '<table class="numbers per-label"><tr><th>label</th><th>images</th><th>AP</th>'
        f"<th>precision at {threshold}</th><th>recall</th><th>F1</th></tr>{rows}</table>"
    )


def _summary(evaluation: MultiLabelEvaluation) -> str:
    metrics = evaluation.metrics
    threshold = f"{metrics.thresholds[0]:g}"
    rows = (
        ("mAP (macro average precision)", percent(metrics.mean_ap)),
        ("micro average precision", percent(metrics.micro_ap)),
        *(
            (f"{kind} precision / recall / F1 at {threshold}", " / ".join(map(percent, values)))
            for kind, counts in (("micro", metrics.micro), ("macro", metrics.macro))
            for values in ((counts.precision, counts.recall, counts.f1),)
        ),
        ("probabilities", METHODS.get(evaluation.method, evaluation.method)),
    )
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    line = calibration_line(evaluation)
    tail = f"<p>Calibration: {html.escape(line)}.</p>" if line else ""
    return f"<h2>Summary</h2><table>{cells}</table>{tail}"


def _run_facts(evaluation: MultiLabelEvaluation) -> str:
    """What a reader needs to reproduce the page: when, which clipcls, model, prompts."""
    templates = " · ".join(f"<code>{html.escape(t)}</code>" for t in evaluation.templates.templates)
    texts = "".join(
        f"<li><b>{html.escape(label.name)}</b>: {html.escape(' | '.join(label.texts))}</li>"
        for label in evaluation.labels
    )
    when = time.strftime("%Y-%m-%d %H:%M:%S %z")
    return f"""<h2>Run</h2><table>
<tr><th>date</th><td>{when}</td></tr>
<tr><th>clipcls</th><td>{__version__}</td></tr>
<tr><th>labels CSV</th><td>{html.escape(path_to_text(str(evaluation.source)))}</td></tr>
<tr><th>model and weights</th><td>{html.escape(evaluation.model_id)}</td></tr></table>
<details><summary>Templates ({html.escape(evaluation.templates.name)})</summary>
<p>{templates}</p></details>
<details><summary>Each label's texts</summary><ul>{texts}</ul></details>"""


def _failures(evaluation: MultiLabelEvaluation) -> str:
    items = "".join(
        f"<li>{html.escape(path_to_text(path))}: {html.escape(error)}</li>"
        for path, error in evaluation.failures
    )
    return f"<ul>{items}</ul>" if items else "<p>None.</p>"


def write_multilabel_report(page: Path, evaluation: MultiLabelEvaluation) -> None:
    """Write one self-contained HTML page (needs matplotlib); page's folder is made if new."""
    import matplotlib

    page.parent.mkdir(exist_ok=True)  # --report out/ names a folder that may be new
    with matplotlib.rc_context({"text.parse_math": False}):  # `$x$` in a label is text
        curves = "".join(
            f'<img class="plot" alt="precision-recall curves" src="{uri}">'
            for uri in pr_curves(evaluation)
        )
    source = html.escape(path_to_text(str(evaluation.source)))
    text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clipcls multi-label evaluation</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head><body>
<h1>Multi-label evaluation of {source}</h1>
<p>{len(evaluation.paths)} images scored, {len(evaluation.failures)} unreadable,
{len(evaluation.labels)} labels; {html.escape(evaluation.name)}.</p>
{_summary(evaluation)}
<h2>Per label</h2>{_per_label(evaluation)}
<h2>Precision-recall curves</h2><div class="plots">{curves}</div>
<h3>Unreadable files</h3>{_failures(evaluation)}
{_run_facts(evaluation)}
</body></html>
"""
    page.write_text(clean_text(text), encoding="utf-8")
