"""`clipcls evaluate`'s own options, declared once as Annotated aliases (clipcls.evaluation.options
checks what they give)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clipcls.cli.options import MODEL_DEFAULT
from clipcls.prompts import DEFAULT_TEMPLATES

DatasetArg = Annotated[
    Path | None,
    typer.Argument(
        help="Folder with one subfolder of images per class (not with --multi-label).",
        show_default=False,
    ),
]
MultiLabelOpt = Annotated[
    Path | None,
    typer.Option(
        "--multi-label",
        metavar="LABELS.csv",
        help="Evaluate every label that applies: a CSV of path,labels (`;`-joined) as the "
        "dataset; reports mAP and per-label AP.",
    ),
]
ThresholdOpt = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        min=0.0,
        max=1.0,
        help="--multi-label: a label applies at or above this probability.",
        show_default="0.5",
    ),
]
ClassnamesOpt = Annotated[
    Path | None,
    typer.Option(
        "--classnames",
        exists=True,
        dir_okay=False,
        help="`folder: name | alias | description` lines for the class texts.",
    ),
]
TemplateSetsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--templates",
        "-t",
        help="Template set or FILE; repeat to compare.",
        show_default=DEFAULT_TEMPLATES,
    ),
]
OneTemplateOpt = Annotated[
    list[str] | None,
    typer.Option("--template", help='One template such as "a photo of a {}."; repeatable.'),
]
ModelsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        "-m",
        help="Model (ARCH, ARCH:TAG, hf-hub:, local-dir:); repeat to compare.",
        show_default=MODEL_DEFAULT,
    ),
]
TopKOpt = Annotated[
    list[int] | None,
    typer.Option("--top-k", "-k", min=1, help="Top-k accuracies to report.", show_default="5"),
]
ReportOutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write the report to FILE.")
]
PredictionsOpt = Annotated[
    Path | None, typer.Option("--predictions", help="Per-image CSV of the predictions.")
]
MaxPerClassOpt = Annotated[
    int | None, typer.Option("--max-per-class", min=1, help="Random N images per class.")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for --max-per-class and --shots.")]
ShotsOpt = Annotated[
    int | None,
    typer.Option(
        "--shots",
        min=1,
        help="Draw K images per class as a support set, score the rest: zero-shot vs support.",
    ),
]
FoldsOpt = Annotated[
    int | None,
    typer.Option("--folds", min=1, help="Draws of --shots to average over.", show_default="5"),
]
SupportOpt = Annotated[
    Path | None,
    typer.Option("--support", help="Example images in DIR/<class>/: zero-shot vs support."),
]
CalibrateOpt = Annotated[
    Path | None,
    typer.Option("--calibrate", help="Fit a temperature and per-label thresholds into FILE.json."),
]
TargetPrecisionOpt = Annotated[
    float | None,
    typer.Option(
        "--target-precision",
        help="Precision each label's --calibrate threshold reaches.",
        show_default="0.95",
    ),
]
ReportPageOpt = Annotated[
    str | None,
    typer.Option(
        "--report",
        help="Write a self-contained HTML report to FILE (a name without a suffix gets .html: "
        "report writes report.html; DIR/ or an existing folder writes DIR/index.html).",
    ),
]
