"""An evaluation's report in the sections its head calls for, behind the one interface the
command writes through: a softmax head's setups on class folders (RankingReport), or an
independent head's labels on a CSV (MultiLabelReport)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, TextIO

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
