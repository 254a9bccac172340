"""A self-contained HTML evaluation report, with the sections its head calls for: a softmax
head's setups compared, per-class bars, heat map, reliability diagram, few-shot folds and
misclassified gallery; an independent head's summary, per-label table and precision-recall
curves."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipcls.errors import ImageError
from clipcls.evaluation.charts import class_bars, heat_map, pr_curves, reliability_diagram
from clipcls.evaluation.exports import METHODS, headline, multi_label_calibration, percent
from clipcls.evaluation.fewshot import FewShotResult, chosen_text, spread
from clipcls.evaluation.page import document, failure_list, model_warnings, run_facts
from clipcls.evaluation.results import Evaluation, MultiLabelEvaluation
from clipcls.images import load_image
from clipcls.output.rows import clean_text
from clipcls.pathtext import path_to_text

GALLERY_MAX = 60
THUMBNAIL = 180


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


HEADERS = {"top1": "top-1", "balanced_accuracy": "balanced accuracy", "ece": "ECE"}


def _cell(values: Sequence[float | None]) -> str:
    found: dict[str, Any] = spread(values)
    if len(values) == 1 or found["mean"] is None:
        return percent(values[0] if len(values) == 1 else None)
    return (
        f"{percent(found['mean'])} ± {percent(found['std'])}"
        f"<br><small>{percent(found['min'])}–{percent(found['max'])}</small>"
    )


def few_shot_table(result: FewShotResult) -> str:
    """Each setup's metrics side by side: mean ± std (min–max) over folds, or single numbers."""
    plan = result.plan
    if plan.support is None:
        about = (
            f"{plan.shots} support images per class drawn from the dataset, the rest scored; "
            f"{plan.folds} folds (seed {plan.seed}): mean ± std, min–max over folds."
        )
    else:
        folder = html.escape(path_to_text(str(plan.support.folder)))
        about = f"Support set {folder}: {result.examples} images; every dataset image scored."
    names = list(next(iter(result.setups.values())))
    head = "".join(
        f"<th>{html.escape(HEADERS.get(n, n.replace('top', 'top-')))}</th>" for n in names
    )
    rows = "".join(
        f"<tr><td>{html.escape(setup)}</td>"
        + "".join(f"<td>{_cell(metrics[n])}</td>" for n in names)
        + "</tr>"
        for setup, metrics in result.setups.items()
    )
    chosen = chosen_text(result)
    tail = f"<p>Cache model alpha/beta (leave-one-out): {chosen}</p>" if chosen else ""
    return (
        f'<h2>Few-shot</h2><p>{about}</p><table class="numbers few-shot">'
        f"<tr><th>setup</th>{head}</tr>{rows}</table>{tail}"
    )


def calibration_section(evaluation: Evaluation, diagram: str) -> str:
    """The calibration error, the reliability diagram (a data: URI), and what --calibrate
    fitted."""
    fitted = evaluation.calibrated
    line = f"<p>Expected calibration error: {percent(evaluation.reliability.ece)}"
    if fitted is not None:
        line += (
            f"; after the fitted temperature {fitted.temperature:g}: {percent(fitted.ece_after)}"
        )
    return (
        f"<h3>Calibration</h3>{line}.</p>"
        f'<img class="plot" alt="reliability diagram" src="{diagram}">'
    )


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


def _multi_label_summary(evaluation: MultiLabelEvaluation) -> str:
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
    line = multi_label_calibration(evaluation)
    tail = f"<p>Calibration: {html.escape(line)}.</p>" if line else ""
    return f"<h2>Summary</h2><table>{cells}</table>{tail}"


def write_report(page: Path, evaluations: Sequence[Evaluation], dataset: Path) -> None:
    """Write one self-contained HTML page: every setup compared, the best one in detail."""
    _write(page, lambda: _page(evaluations, dataset))


def write_multi_label_report(page: Path, evaluation: MultiLabelEvaluation) -> None:
    """Write one self-contained HTML page of a multi-label evaluation."""
    _write(page, lambda: _multi_label_page(evaluation))


def _write(page: Path, text: Callable[[], str]) -> None:
    import matplotlib

    # Labels are folder names or a CSV's: `$x$` in one must print as written, not as math.
    with matplotlib.rc_context({"text.parse_math": False}):
        page.write_text(clean_text(text()), encoding="utf-8")


def _page(evaluations: Sequence[Evaluation], dataset: Path) -> str:
    best = max(evaluations, key=lambda e: e.metrics.top1 or 0.0)
    several = len(evaluations) > 1
    detail = f"Details for: {html.escape(best.name)}" + (" (best top-1)" if several else "")
    template_sets = {e.templates.name: e.templates.templates for e in evaluations}
    listed = "".join(
        f"<li><b>{html.escape(name)}</b>: "
        + " · ".join(f"<code>{html.escape(t)}</code>" for t in texts)
        + "</li>"
        for name, texts in template_sets.items()
    )
    templates = f"<details><summary>Templates</summary><ul>{listed}</ul></details>"
    unreadable = (
        (path, error.replace(f": {path}", "").replace(path, "").strip(" :"))  # path said once
        for path, _, error in best.data.failures
    )
    heading = f"Zero-shot evaluation of {html.escape(path_to_text(str(dataset)))}"
    about = f"{len(best.labels)} classes, {len(evaluations)} setup{'s' if several else ''}"
    body = f"""{_comparison(evaluations, best)}
{few_shot_table(best.few_shot) if best.few_shot is not None else ""}
<h2>{detail}</h2>
<h3>Per class</h3>
<div class="plots">{_per_class(best)}
<img class="plot" alt="per-class recall and precision" src="{class_bars(best)}"></div>
<h3>Confusion matrix</h3><img class="plot" alt="confusion matrix" src="{heat_map(best)}">
{calibration_section(best, reliability_diagram(best))}
<h3>Most confident mistakes</h3>{gallery(best)}
<h3>Unreadable files</h3>{failure_list(unreadable)}
{run_facts("dataset", dataset, evaluations, templates, "class")}"""
    counts = (len(best.data.paths), len(best.data.failures))
    return document("clipcls evaluation", heading, counts, about, body, model_warnings(evaluations))


def _multi_label_page(evaluation: MultiLabelEvaluation) -> str:
    curves = "".join(
        f'<img class="plot" alt="precision-recall curves" src="{uri}">'
        for uri in pr_curves(evaluation)
    )
    source = html.escape(path_to_text(str(evaluation.source)))
    texts = " · ".join(f"<code>{html.escape(t)}</code>" for t in evaluation.templates.templates)
    templates = (
        f"<details><summary>Templates ({html.escape(evaluation.templates.name)})</summary>\n"
        f"<p>{texts}</p></details>"
    )
    body = f"""{_multi_label_summary(evaluation)}
<h2>Per label</h2>{_per_label(evaluation)}
<h2>Precision-recall curves</h2><div class="plots">{curves}</div>
<h3>Unreadable files</h3>{failure_list(evaluation.failures)}
{run_facts("labels CSV", evaluation.source, [evaluation], templates, "label")}"""
    about = f"{len(evaluation.labels)} labels; {html.escape(evaluation.name)}"
    heading = f"Multi-label evaluation of {source}"
    title = "clipcls multi-label evaluation"
    counts = (len(evaluation.paths), len(evaluation.failures))
    return document(title, heading, counts, about, body, model_warnings([evaluation]))
