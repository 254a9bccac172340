"""The report's few-shot and calibration sections: zero-shot against a support set as a small
table, and the reliability diagram (top-1 confidence against accuracy)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from clipcls.evaluation.exports import percent
from clipcls.evaluation.fewshot import FewShotResult, chosen_text, spread
from clipcls.evaluation.scoring import Evaluation
from clipcls.pathtext import path_to_text

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
