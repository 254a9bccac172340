"""`clipcls evaluate`'s own options, declared once as Annotated aliases, and how they read:
the template sets to compare, and the output files checked before any model loads."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from clipcls.cli.console import check_output_path, notice, warn
from clipcls.cli.formats import ReportFormat, as_format
from clipcls.errors import ClipclsError, UsageError
from clipcls.evaluation.calibrate import DEFAULT_PRECISION
from clipcls.evaluation.fewshot import FewShotPlan
from clipcls.evaluation.outputs import Saved
from clipcls.fewshot.support import find_support
from clipcls.labels import Label
from clipcls.output.files import check_page, page_path
from clipcls.output.formats import REPORT_FORMATS, Format, format_for
from clipcls.output.rows import clean_text
from clipcls.prompts import DEFAULT_TEMPLATES, TemplateSet, load_templates, single_templates
from clipcls.settings import DEFAULT_MODEL

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
        show_default=DEFAULT_MODEL,
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
        help="Write a self-contained HTML report to FILE (DIR/ writes DIR/index.html).",
    ),
]


def template_sets(
    templates: list[str] | None, template: list[str] | None
) -> tuple[TemplateSet, ...]:
    """The template sets to compare: each --templates, then the --template ones as one set."""
    sets = [load_templates(name) for name in templates or []]
    if template:
        sets.append(single_templates(template))
    return tuple(sets or [load_templates(DEFAULT_TEMPLATES)])


def top_ks(top_k: list[int] | None) -> tuple[int, ...]:
    """The top-k accuracies besides top-1: top-5 always; -k adds."""
    return tuple(sorted({5, *(top_k or [])} - {1}))


def check_outputs(
    output: Path | None,
    fmt: ReportFormat | None,
    predictions: Path | None,
    report_file: str | None,
    overwrite: bool,
    calibrate: Path | None = None,
) -> tuple[Format, Path | None]:
    """The report's format and the HTML page's path, once every output is known writable
    (and matplotlib importable for a page): all of it before any model loads."""
    check_output_path(output, overwrite)
    kind = format_for(output, as_format(fmt), REPORT_FORMATS)
    check_output_path(predictions, overwrite, "--predictions")
    page = page_path(report_file) if report_file is not None else None
    files = (output, predictions, page, calibrate)
    named = [path.resolve() for path in files if path is not None]
    if len(set(named)) < len(named):  # the last written would silently replace the other
        raise UsageError(
            "--output, --predictions, --report and --calibrate must name different files"
        )
    if page is not None:
        check_page(page, overwrite)
        from clipcls.evaluation.html import require_matplotlib

        require_matplotlib()
    return kind, page


def few_shot_plan(
    labels: tuple[Label, ...],
    shots: int | None,
    folds: int | None,
    seed: int,
    support: Path | None,
    include_hidden: bool = False,
) -> FewShotPlan | None:
    """What to compare zero-shot with, its support folder checked against the classes: all
    before any model loads."""
    if shots is not None and support is not None:
        raise UsageError("--shots draws a support set from the dataset: give it or --support")
    if folds is not None and shots is None:
        raise UsageError("--folds repeats --shots: give --shots K")
    if shots is not None:
        return FewShotPlan(shots, folds or 5, seed)
    if support is not None:
        return FewShotPlan(support=find_support(support, labels, include_hidden))
    return None


def calibration_target(
    calibrate: Path | None,
    precision: float | None,
    shots: int | None,
    n_setups: int,
    overwrite: bool,
) -> float:
    """The target precision of --calibrate's thresholds, once --calibrate can be written."""
    if precision is not None and not 0 < precision <= 1:
        raise UsageError(f"--target-precision must be in (0, 1], not {precision}")
    if calibrate is None:
        if precision is not None:
            raise UsageError("--target-precision sets --calibrate's thresholds: give --calibrate")
        return DEFAULT_PRECISION
    if shots is not None:
        raise UsageError("use --support DIR with --calibrate (--shots draws many support sets)")
    if n_setups > 1:
        raise UsageError("--calibrate fits one model and one template set: give one of each")
    check_output_path(calibrate, overwrite, "--calibrate")
    return DEFAULT_PRECISION if precision is None else precision


def report_saved(outcomes: Iterable[Saved], quiet: bool) -> None:
    """Say what each written file is (unless quiet) or why it could not be written; then fail
    naming those that could not (each file was tried on its own)."""
    unwritten = []
    for saved in outcomes:
        where = clean_text(str(saved.path))
        if saved.error is not None:
            warn(f"cannot write {where}: {clean_text(saved.error)}")
            unwritten.append(str(saved.path))
        elif not quiet:
            notice(f"wrote {saved.what} to {where}")
    if unwritten:
        raise ClipclsError(f"could not write {', '.join(unwritten)} (see above)")
