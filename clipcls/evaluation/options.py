"""What `evaluate` was asked, checked whole before any model loads: class folders ranked by a
softmax head, or a labels CSV whose labels are each judged on their own, and where the results
go; a Plan that runs it and makes the report its head calls for."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from clipcls.backends.base import Backend, Hooks, backend_name
from clipcls.backends.ray_data import check_ray
from clipcls.classify import ShowProgress, no_progress
from clipcls.errors import UsageError
from clipcls.evaluation.charts import require_matplotlib
from clipcls.evaluation.dataset import class_labels, load_dataset
from clipcls.evaluation.fewshot import FewShotPlan
from clipcls.evaluation.report import MultiLabelReport, Outputs, RankingReport, Report
from clipcls.evaluation.results import Evaluation, MultiLabelEvaluation, Setup
from clipcls.evaluation.run import (
    DEFAULT_THRESHOLD,
    EvaluationRun,
    MultiLabelRun,
    Run,
    run_evaluation,
)
from clipcls.fewshot.support import find_support
from clipcls.labels import Label, parse_labels, read_labels_file
from clipcls.output.files import check_new_output, check_page, page_path
from clipcls.output.formats import REPORT_FORMATS, Format, format_for
from clipcls.prompts import DEFAULT_TEMPLATES, TemplateSet, load_templates, single_templates

# The options of one mode only: a labels CSV is its own images and labels.
MULTI_LABEL_ONLY = ("--labels", "--labels-file", "--threshold")


@dataclass(frozen=True)
class EvaluateOptions:
    """What to evaluate, as the options gave it (None or empty: not given): class folders
    (dataset) or a labels CSV (multi_label), the labels, prompts and models, the few-shot
    comparison, and the backend the options choose (which limits the models it may run)."""

    dataset: Path | None = None
    multi_label: Path | None = None
    labels: str | None = None
    labels_file: Path | None = None
    threshold: float | None = None
    classnames: Path | None = None
    templates: Sequence[str] = ()
    template: Sequence[str] = ()
    models: Sequence[str] = ()
    top_k: Sequence[int] = ()
    max_per_class: int | None = None
    seed: int = 0
    shots: int | None = None
    folds: int | None = None
    support: Path | None = None
    include_hidden: bool = False
    server: str | None = None
    engine: str = "local"
    embeddings: Path | None = None  # --from-embeddings


@dataclass(frozen=True)
class OutputOptions:
    """Where the results go, as the options gave them (report: a --report FILE or DIR/)."""

    output: Path | None = None
    kind: Format | None = None
    predictions: Path | None = None
    report: str | None = None
    calibrate: Path | None = None
    target_precision: float | None = None
    overwrite: bool = False


T = TypeVar("T", bound=Setup)


@dataclass(frozen=True)
class Plan(Generic[T]):
    """A checked evaluation: its run, the report its results make, and where they go."""

    run: Run[T]
    report: Callable[[list[T]], Report]
    outputs: Outputs

    def evaluate(
        self,
        backends: Iterable[Backend],
        hooks: Hooks | None = None,
        progress: ShowProgress = no_progress,
    ) -> Report:
        """Run it on each backend in turn (see run_evaluation) and make the report."""
        return self.report(run_evaluation(backends, self.run, hooks, progress))


def plan_evaluation(
    options: EvaluateOptions, outputs: OutputOptions
) -> Plan[Evaluation] | Plan[MultiLabelEvaluation]:
    """The plan, every option, file and output checked; UsageError for the first that fails."""
    given = {
        "DATASET": options.dataset is not None,
        "--classnames": options.classnames is not None,
        "--max-per-class": options.max_per_class is not None,
        "--shots": options.shots is not None,
        "--folds": options.folds is not None,
        "--support": options.support is not None,
        "--top-k": bool(options.top_k),
        "--labels": options.labels is not None,
        "--labels-file": options.labels_file is not None,
        "--threshold": options.threshold is not None,
    }
    for name in (name for name, present in given.items() if present):
        if options.multi_label is not None and name not in MULTI_LABEL_ONLY:
            raise UsageError(
                f"--multi-label reads its images and labels from the CSV: {name} does not apply"
            )
        if options.multi_label is None and name in MULTI_LABEL_ONLY:
            raise UsageError(f"{name} is for --multi-label LABELS.csv")
    if options.engine == "ray":
        check_ray()
    if options.multi_label is not None:
        return _multi_label(options.multi_label, options, outputs)
    return _class_folders(options, outputs)


def _class_folders(options: EvaluateOptions, outputs: OutputOptions) -> Plan[Evaluation]:
    if options.dataset is None:
        raise UsageError("give DATASET (a folder of class folders) or --multi-label LABELS.csv")
    models = options.models
    chosen = backend_name(options.server, options.engine, options.embeddings)
    if chosen == "embeddings" and len(models) > 1:
        raise UsageError("--from-embeddings holds one model's embeddings: give one --model")
    dataset = load_dataset(
        options.dataset, options.max_per_class, options.seed, options.include_hidden
    )
    labels = class_labels(dataset.classes, options.classnames)
    sets = template_sets(options.templates, options.template)
    plan = few_shot_plan(labels, options)
    _check_calibrate(outputs)
    if outputs.calibrate is not None:
        if options.shots is not None:
            raise UsageError("use --support DIR with --calibrate (--shots draws many support sets)")
        if len(sets) * max(len(models), 1) > 1:
            raise UsageError("--calibrate fits one model and one template set: give one of each")
        check_new_output(outputs.calibrate, outputs.overwrite, "--calibrate")
    run = EvaluationRun(dataset, labels, sets, top_ks(options.top_k), plan)
    files = check_outputs(outputs)
    if options.server is not None and (options.engine == "ray" or len(models) > 1):
        raise UsageError("--server evaluates the server's one model (no --engine ray)")
    return Plan(run, lambda found: RankingReport(found, dataset.root, plan), files)


def _multi_label(
    source: Path, options: EvaluateOptions, outputs: OutputOptions
) -> Plan[MultiLabelEvaluation]:
    sets = template_sets(options.templates, options.template)
    if len(sets) > 1 or len(options.models) > 1:
        raise UsageError("--multi-label evaluates one model and one template set: give one of each")
    threshold = DEFAULT_THRESHOLD if options.threshold is None else options.threshold
    if not 0.0 <= threshold <= 1.0:  # a NaN too: options built in Python skip typer
        raise UsageError(f"--threshold must be in 0-1, not {threshold}")
    _check_calibrate(outputs)
    if outputs.calibrate is not None:
        check_new_output(outputs.calibrate, outputs.overwrite, "--calibrate")
    run = MultiLabelRun.from_csv(source, sets[0], _labels(options), threshold)
    return Plan(run, lambda found: MultiLabelReport(found[0]), check_outputs(outputs))


def _labels(options: EvaluateOptions) -> tuple[Label, ...] | None:
    """The label set --labels or --labels-file gives (one of them), else None: the CSV's."""
    if options.labels is not None and options.labels_file is not None:
        raise UsageError("give one of --labels or --labels-file")
    if options.labels is not None:
        return parse_labels(options.labels)
    return read_labels_file(options.labels_file) if options.labels_file is not None else None


def template_sets(templates: Sequence[str], template: Sequence[str]) -> tuple[TemplateSet, ...]:
    """The template sets to compare: each --templates, then the --template ones as one set."""
    sets = [load_templates(name) for name in templates]
    if template:
        sets.append(single_templates(list(template)))
    return tuple(sets or [load_templates(DEFAULT_TEMPLATES)])


def top_ks(top_k: Sequence[int]) -> tuple[int, ...]:
    """The top-k accuracies besides top-1: top-5 always; -k adds."""
    return tuple(sorted({5, *top_k} - {1}))


def few_shot_plan(labels: tuple[Label, ...], options: EvaluateOptions) -> FewShotPlan | None:
    """What to compare zero-shot with, its support folder checked against the classes."""
    shots, support = options.shots, options.support
    if shots is not None and support is not None:
        raise UsageError("--shots draws a support set from the dataset: give it or --support")
    if options.folds is not None and shots is None:
        raise UsageError("--folds repeats --shots: give --shots K")
    if shots is not None:
        return FewShotPlan(shots, options.folds or 5, options.seed)
    if support is not None:
        return FewShotPlan(support=find_support(support, labels, options.include_hidden))
    return None


def _check_calibrate(outputs: OutputOptions) -> None:
    precision = outputs.target_precision
    if precision is not None and not 0 < precision <= 1:
        raise UsageError(f"--target-precision must be in (0, 1], not {precision}")
    if precision is not None and outputs.calibrate is None:
        raise UsageError("--target-precision sets --calibrate's thresholds: give --calibrate")


def check_outputs(asked: OutputOptions) -> Outputs:
    """The report's format and the HTML page's path, once every output is known writable
    (and matplotlib importable for a page)."""
    output, predictions, overwrite = asked.output, asked.predictions, asked.overwrite
    if output is not None:
        check_new_output(output, overwrite)
    kind = format_for(output, asked.kind, REPORT_FORMATS)
    if predictions is not None:
        check_new_output(predictions, overwrite, "--predictions")
    page = page_path(asked.report) if asked.report is not None else None
    files = (output, predictions, page, asked.calibrate)
    named = [path.resolve() for path in files if path is not None]
    if len(set(named)) < len(named):  # the last written would silently replace the other
        raise UsageError(
            "--output, --predictions, --report and --calibrate must name different files"
        )
    if page is not None:
        check_page(page, overwrite)
        require_matplotlib()
    return Outputs(kind, output, predictions, page, asked.calibrate, asked.target_precision)
