"""An evaluation's report in the sections its head calls for, behind one interface: a softmax
head's setups on class folders (RankingReport), or an independent head's labels on a CSV
(MultiLabelReport); and writing one: the calibration where asked, the report (JSON or tables)
to a stream, then the per-image CSV and the HTML page, each on its own."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Protocol, TextIO

from clipcls.backends.base import Hooks
from clipcls.errors import ClipclsError
from clipcls.evaluation.calibrate import (
    DEFAULT_PRECISION,
    fit_calibration,
    fit_multilabel,
    reached,
)
from clipcls.evaluation.exports import (
    json_document,
    json_text,
    multi_label_calibration,
    multi_label_report,
    write_multi_label_predictions,
    write_predictions,
)
from clipcls.evaluation.fewshot import FewShotPlan
from clipcls.evaluation.html import write_multi_label_report, write_report
from clipcls.evaluation.results import Evaluation, MultiLabelEvaluation
from clipcls.evaluation.terminal import print_multi_label, print_results
from clipcls.fewshot.calibration import Calibration
from clipcls.output.formats import Format
from clipcls.output.rows import clean_text
from clipcls.output.writers import plain_console


class Report(Protocol):
    """What the command does with an evaluation's results, whichever head judged them: how
    many images failed, the warnings to say once, the report with a calibration fitted on its
    one setup (with the Calibration to write and a line saying what it changed; precision
    None: the head's default target), and the report as JSON or tables, the per-image CSV and
    the HTML page."""

    @property
    def failures(self) -> int: ...

    def warnings(self) -> list[str]: ...

    def calibrated(self, precision: float | None) -> tuple[Report, Calibration, str]: ...

    def write(self, stream: TextIO, kind: Format) -> None: ...

    def write_predictions(self, path: Path) -> None: ...

    def write_page(self, page: Path) -> None: ...


@dataclass(frozen=True)
class RankingReport:
    """A softmax head's setups (one per model and template set) on class folders: accuracy,
    per-class table, confusions, reliability, and the few-shot comparison where planned."""

    evaluations: Sequence[Evaluation]
    dataset: Path  # the folder of class folders
    plan: FewShotPlan | None = None

    @property
    def failures(self) -> int:
        return len(self.evaluations[0].data.failures)  # the same files fail for every model

    def warnings(self) -> list[str]:
        first, plan = self.evaluations[0], self.plan
        lines = [clean_text(error) for _, _, error in first.data.failures]
        lines += plan.support.notes() if plan is not None and plan.support is not None else ()
        lines += first.few_shot.notes if first.few_shot is not None else ()  # said once
        return lines

    def calibrated(self, precision: float | None) -> tuple[Report, Calibration, str]:
        target = DEFAULT_PRECISION if precision is None else precision
        files = self.plan.support if self.plan is not None else None
        identity = files.identity() if files is not None else None
        fitted = fit_calibration(self.evaluations[0], target, identity)
        evaluation = replace(self.evaluations[0], calibrated=fitted)
        said = (
            f"temperature {fitted.temperature:g}, ECE {fitted.ece_before:.1%} -> "
            f"{fitted.ece_after:.1%}, {reached(fitted)} of {len(fitted.labels)} labels reach "
            f"{target:g} precision"
        )
        return replace(self, evaluations=[evaluation]), fitted, said

    def write(self, stream: TextIO, kind: Format) -> None:
        if not kind.for_people:
            stream.write(json_document(self.evaluations) + "\n")
        else:
            print_results(plain_console(file=stream), self.evaluations)

    def write_predictions(self, path: Path) -> None:
        write_predictions(path, self.evaluations)

    def write_page(self, page: Path) -> None:
        write_report(page, self.evaluations, self.dataset)


@dataclass(frozen=True)
class MultiLabelReport:
    """An independent head's one setup on a labels CSV: mAP, per-label AP, the counts at the
    threshold, and precision-recall curves."""

    evaluation: MultiLabelEvaluation

    @property
    def failures(self) -> int:
        return len(self.evaluation.failures)

    def warnings(self) -> list[str]:
        evaluation = self.evaluation
        lines = [clean_text(error) for _, error in evaluation.failures]
        lines += [
            f"label {clean_text(evaluation.names[j])} has no image in the CSV: its AP is 0 "
            "(as scikit-learn's), which lowers the mAP"
            for j in evaluation.metrics.without_positives
        ]
        return lines

    def calibrated(self, precision: float | None) -> tuple[Report, Calibration, str]:
        fitted = fit_multilabel(self.evaluation, precision)
        evaluation = replace(self.evaluation, calibrated=fitted)
        said = multi_label_calibration(evaluation)
        return MultiLabelReport(evaluation), fitted.calibration, said or ""

    def write(self, stream: TextIO, kind: Format) -> None:
        if not kind.for_people:
            stream.write(json_text(multi_label_report(self.evaluation)) + "\n")
        else:
            print_multi_label(plain_console(file=stream), self.evaluation)

    def write_predictions(self, path: Path) -> None:
        write_multi_label_predictions(path, self.evaluation)

    def write_page(self, page: Path) -> None:
        write_multi_label_report(page, self.evaluation)


@dataclass(frozen=True)
class Outputs:
    """Where an evaluation's results go, each checked before any model loads: the report's
    format and file (None: the stream the caller gives), the per-image CSV, the HTML page, and
    the calibration file with its thresholds' target precision (None: the head's default)."""

    kind: Format = Format.TABLE
    output: Path | None = None
    predictions: Path | None = None
    page: Path | None = None
    calibrate: Path | None = None
    precision: float | None = None


@dataclass(frozen=True)
class Saved:
    """One file an evaluation was asked to write: what it holds, and why it could not be
    written (None once written)."""

    path: Path
    what: str
    error: str | None = None


def attempt(path: Path, what: str, write: Callable[[], None]) -> Saved:
    """Run write; a Saved with the reason where it failed."""
    try:
        write()
    except Exception as error:  # a rendering library's surprise must not lose the results
        return Saved(path, what, str(error) or type(error).__name__)
    return Saved(path, what)


def _write_page(report: Report, page: Path, hooks: Hooks) -> None:
    with hooks.status("drawing the report"):
        page.parent.mkdir(exist_ok=True)  # --report out/ names a folder that may be new
        report.write_page(page)


def save_files(report: Report, outputs: Outputs, hooks: Hooks | None = None) -> Iterator[Saved]:
    """Write the per-image predictions CSV and the HTML page, where asked, in that order;
    yield each one's outcome as soon as it is known."""
    if outputs.predictions is not None:
        path = outputs.predictions
        yield attempt(path, "per-image predictions", partial(report.write_predictions, path))
    if outputs.page is not None:
        write = partial(_write_page, report, outputs.page, hooks or Hooks())
        yield attempt(outputs.page, "the report", write)


def report_saved(outcomes: Iterable[Saved], hooks: Hooks) -> None:
    """Say what each written file is (a notice) or why it could not be written (a warning);
    then fail naming those that could not (each file was tried on its own)."""
    unwritten = []
    for saved in outcomes:
        where = clean_text(str(saved.path))
        if saved.error is not None:
            hooks.warn(f"cannot write {where}: {clean_text(saved.error)}")
            unwritten.append(str(saved.path))
        else:
            hooks.notice(f"wrote {saved.what} to {where}")
    if unwritten:
        raise ClipclsError(f"could not write {', '.join(unwritten)} (see above)")


def write_outputs(
    report: Report,
    outputs: Outputs,
    stream: Callable[[], AbstractContextManager[TextIO]],
    hooks: Hooks | None = None,
) -> Report:
    """Say the report's warnings; fit and write the calibration where asked; write the report
    to the stream opened last (so that a run that fails writes nothing there); then the files.

    Returns:
        the report as written (with its calibration).
    """
    voice = hooks or Hooks()
    for line in report.warnings():
        voice.warn(line)
    if outputs.calibrate is not None:
        report, fitted, said = report.calibrated(outputs.precision)
        fitted.write(outputs.calibrate)
        voice.notice(f"wrote the calibration to {clean_text(str(outputs.calibrate))}: {said}")
    with stream() as opened:
        report.write(opened, outputs.kind)
    report_saved(save_files(report, outputs, voice), voice)
    return report
