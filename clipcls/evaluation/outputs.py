"""Writing an evaluation's results: the calibration where asked, the report (JSON or tables) to
a stream, then the per-image CSV and the HTML page, each on its own, so that one that fails
never costs the others."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TextIO

from clipcls.backends.base import Hooks
from clipcls.errors import ClipclsError
from clipcls.evaluation.report import Report
from clipcls.output.formats import Format
from clipcls.output.rows import clean_text


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
