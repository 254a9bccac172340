"""The few-shot options of predict, label and serve: a support set of example images, a
calibration file, and --threshold, which takes `auto` (the calibration's per-label thresholds)
as well as a probability."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clipcls.cli.backend_options import explicit
from clipcls.errors import UsageError
from clipcls.fewshot.runs import AUTO

FEWSHOT_PANEL = "Few-shot and calibration"

SupportOpt = Annotated[
    Path | None,
    typer.Option(
        "--support",
        metavar="DIR",
        file_okay=False,
        rich_help_panel=FEWSHOT_PANEL,
        help="Example images in DIR/<label>/ (a few per label): each image is also scored by "
        "its likeness to them (folder names must be labels).",
    ),
]

CalibrationOpt = Annotated[
    Path | None,
    typer.Option(
        "--calibration",
        metavar="FILE.json",
        exists=True,
        dir_okay=False,
        rich_help_panel=FEWSHOT_PANEL,
        help="Apply the temperature (and, with --threshold auto, the per-label thresholds) that "
        "`evaluate --calibrate` fitted for this model, labels, templates and support set.",
    ),
]


def threshold_value(text: str | None) -> float | str | None:
    """A --threshold: a probability from 0 to 1, or `auto`."""
    if text is None:
        return None
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        value = float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is neither a probability (0-1) nor auto") from None
    if not 0.0 <= value <= 1.0:
        raise typer.BadParameter(f"{text} is not in the range 0<=x<=1")
    return value


def _checked(text: str | None) -> str | None:
    threshold_value(text)  # a bad value is refused while the options are parsed (exit 2)
    return text


ThresholdOpt = Annotated[
    str | None,
    typer.Option(
        "--threshold",
        metavar="P|auto",
        callback=_checked,
        help="Top probability below P gets the unknown label; auto: below its label's "
        "threshold in --calibration's file. With --multi-label: every label at or above P "
        "applies (default 0.5), auto: each label's own from --calibration.",
    ),
]

MultiLabelOpt = Annotated[
    bool,
    typer.Option(
        "--multi-label",
        rich_help_panel=FEWSHOT_PANEL,
        help="Every label that applies, each with its own probability (SigLIP models: their "
        "sigmoid; others: label against a background prompt, or --calibration's per-label "
        "logistic): CSV columns labels (joined by ;) and prob:LABEL; no --top-k.",
    ),
]


def refuse_top_k(ctx: typer.Context, multi_label: bool) -> None:
    """--top-k ranks one softmax; with --multi-label every label has its column already."""
    if multi_label and explicit(ctx, "top_k"):
        raise UsageError(
            "--top-k has no meaning with --multi-label: every label gets its own "
            "probability (prob:LABEL); use --threshold to choose which apply"
        )
