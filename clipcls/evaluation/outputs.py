"""Writing an evaluation's results: the report (JSON or tables) to a stream, then the per-image
CSV and the HTML page, each on its own, so that one that fails never costs the others."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TextIO

from clipcls.backends.base import Hooks
from clipcls.evaluation.exports import json_document, write_predictions
from clipcls.evaluation.scoring import Evaluation
from clipcls.evaluation.terminal import print_results
from clipcls.output.formats import Format
from clipcls.output.writers import plain_console


def write_results(stream: TextIO, evaluations: Sequence[Evaluation], kind: Format) -> None:
    """The report as JSON, or as tables for people (Format.TABLE)."""
    if not kind.for_people:
        stream.write(json_document(evaluations) + "\n")
    else:
        print_results(plain_console(file=stream), evaluations)


def write_page(
    page: Path, evaluations: Sequence[Evaluation], dataset: Path, hooks: Hooks | None = None
) -> None:
    """The self-contained HTML report (needs matplotlib); page's folder is made if new."""
    from clipcls.evaluation.html import write_report

    with (hooks or Hooks()).status("drawing the report"):
        page.parent.mkdir(exist_ok=True)  # --report out/ names a folder that may be new
        write_report(page, evaluations, dataset)


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


def save_files(
    evaluations: Sequence[Evaluation],
    dataset: Path,
    predictions: Path | None = None,
    page: Path | None = None,
    hooks: Hooks | None = None,
) -> Iterator[Saved]:
    """Write the per-image predictions CSV and the HTML page, where asked, in that order;
    yield each one's outcome as soon as it is known."""
    if predictions is not None:
        write = partial(write_predictions, predictions, evaluations)
        yield attempt(predictions, "per-image predictions", write)
    if page is not None:
        yield attempt(page, "the report", partial(write_page, page, evaluations, dataset, hooks))
