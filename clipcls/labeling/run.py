"""A whole label run: walk the inputs, skip what a resumed output holds, start the backend, write
each row and place its file, finish what an interrupted run left; the caller hears of it through
LabelEvents (the library never prints)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TextIO

from clipcls.backends.base import Backend, Expected
from clipcls.errors import ClipclsError, UsageError
from clipcls.fewshot.runs import AUTO, FewShot, prepare_fewshot
from clipcls.images import MARKER, iter_image_paths
from clipcls.labeling.job import LabelJob, Summary, is_done
from clipcls.labeling.label_file import LabelOutput, begin, check_loaded_model, open_label_output
from clipcls.labeling.manifest import RunSetup
from clipcls.labeling.options import (
    LabelOptions,
    check_file_format,
    check_sorting,
    multi_label_options,
    run_setup,
)
from clipcls.labeling.predictor import Predictor
from clipcls.labeling.resume import Recovered
from clipcls.labeling.sortfolder import SortFolder, claim_sort_folder
from clipcls.labeling.sorting import SortMode
from clipcls.labels import Label
from clipcls.output.formats import LABEL_FORMATS, Format, format_for
from clipcls.output.rows import Row, clean_text
from clipcls.prompts import TemplateSet
from clipcls.remote import is_url

RESUME_HINT = "run the same command with --resume once the problem is fixed"


def _silent(text: str) -> None:
    return None


def _untracked(rows: Iterator[Row], total: int) -> Iterator[Row]:
    return rows


def _stopped(interrupt: KeyboardInterrupt, summary: Summary, resumable: bool) -> None:
    return None  # the interrupt goes on up


class Guard(Protocol):
    """What holds stop signals off while a row and its file's placement are done (the CLI's
    InterruptGuard): `installed()` around the writing, `section()` around each row."""

    def installed(self) -> AbstractContextManager[Any]: ...

    def section(self) -> AbstractContextManager[Any]: ...


class NoGuard:
    """No signal handling: a stop between a row and its placement is finished on --resume."""

    def installed(self) -> AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def section(self) -> AbstractContextManager[Any]:
        return contextlib.nullcontext()


@dataclass(frozen=True)
class LabelEvents:
    """What the caller hears of a run: notice and warning lines (a skipped sorted folder, an
    unreadable file, ...), the written rows to watch (a progress bar wraps them, given how many
    to expect), and an interrupt once the rows so far are safe (the interrupt then goes on up,
    unless the hook raises something else)."""

    notice: Callable[[str], None] = _silent
    warn: Callable[[str], None] = _silent
    track: Callable[[Iterator[Row], int], Iterator[Row]] = _untracked
    interrupted: Callable[[KeyboardInterrupt, Summary, bool], None] = _stopped


@dataclass(frozen=True)
class LabelResult:
    """What a run did; started is False when nothing was left to label (no backend started)."""

    summary: Summary = field(default_factory=Summary)
    started: bool = True


def label_tree(
    inputs: Sequence[str],
    output: Path,
    labels: Sequence[Label],
    templates: TemplateSet,
    options: LabelOptions,
    backend: Backend,
    *,
    kind: Format | None = None,
    resume: bool = False,
    overwrite: bool = False,
    include_hidden: bool = False,
    events: LabelEvents | None = None,
    guard: Guard | None = None,
    walk: bool = True,
    support: Path | None = None,
    calibration: Path | None = None,
) -> LabelResult:
    """Label every image under inputs into output (one row per file; kind from its name if not
    given), resuming it or replacing it as asked, and sort files as options say.

    walk=False takes inputs as the files themselves, in order, not walked: they need not exist
    unless they are sorted (a backend of saved embeddings answers for them).

    support: a folder of example images, SUPPORT/<label>/<image>, scored with the labels
    (fewshot.support); calibration: a file `evaluate --calibrate` wrote for this model, labels,
    templates and support set, whose temperature is applied and whose per-label thresholds
    options.threshold "auto" takes. Both are recorded in the setup that --resume compares.

    options.multi_label: each label its own probability (SigLIP models' sigmoid, else label
    against a background prompt, or the calibration's per-label logistic), every label at or
    above the threshold (0.5 unless given) in the row; sorted files are copied or linked into
    each of their labels' folders (a move is refused).

    Raises UsageError before anything is written for what cannot run, ClipclsError for what
    failed on the way (the output then holds every complete row: run again with resume).
    """
    labels, events = tuple(labels), events or LabelEvents()
    options = multi_label_options(options, labels)
    kind = format_for(output, None, LABEL_FORMATS) if kind is None else kind
    check_file_format(kind, resume, options.save_embeddings)  # the CLI checked; Python may not
    check_sorting(kind, options, list(inputs))
    auto = options.threshold == AUTO
    fewshot = prepare_fewshot(
        labels,
        templates,
        support,
        calibration,
        auto,
        include_hidden,
        events.warn,
        options.multi_label,
    )
    setup = replace(
        run_setup(kind, options, labels, templates, backend.weights),
        model=backend.known_model or "",  # a server's, named if its weights refuse a resume
        server=backend.served_by,  # a resume must come from the same place
        support=fewshot.support_identity if fewshot is not None else None,
        calibration=fewshot.calibration_identity if fewshot is not None else None,
    )
    if fewshot is not None:
        _keep_examples(fewshot, options, inputs)
        options = replace(options, threshold=fewshot.thresholds()) if auto else options
    predictor = Predictor(backend, fewshot, events.notice, events.warn)
    keep = options.mode is SortMode.MOVE or options.dry_run
    columns = options.columns(labels)
    with contextlib.ExitStack() as held:
        out = open_label_output(output, kind, columns, setup, resume, overwrite, keep)
        held.callback(out.close)
        folder: SortFolder | None = None
        if options.sort_into is not None and not options.dry_run:
            folder = held.enter_context(claim_sort_folder(options.sort_into))
        recovered = out.recovered or Recovered()
        files = partial(_files, inputs, walk, include_hidden, options.sort_into)
        pending = partial(_pending, files, options, recovered)
        total = _count(pending, events)
        if total == 0 and out.recovered is None:
            raise UsageError(f"no images found in {', '.join(inputs)}")
        if total == 0 and (options.sort_into is None or options.dry_run):  # no model needed
            events.notice(
                f"nothing left to label: {clean_text(str(output))} holds every image found"
            )
            return LabelResult(started=False)
        predictor.start(Expected(labels, (templates,), paths=pending))
        loaded = predictor.model_id
        precision = _precision(predictor.backend)
        check_loaded_model(out, setup, loaded, precision)
        row_model = out.recorded.model if out.recorded is not None else loaded
        job = LabelJob(predictor, labels, templates, options, row_model, out.recovered, folder)
        rows = job.rows(files())
        if recovered.dropped_bytes:
            events.notice(
                f"dropped a partial last line ({recovered.dropped_bytes} bytes) "
                f"from {clean_text(str(output))}"
            )
        writing = _Writing(
            job, out, replace(setup, model=row_model, precision=precision), kind, events
        )
        writing.run(rows, total, guard or NoGuard())
    return LabelResult(job.summary)


def _precision(backend: object) -> str | None:
    """The precision a backend computes in, where it says (a backend made for the API may not)."""
    value = getattr(getattr(backend, "info", None), "precision", None)
    return value if isinstance(value, str) else None


def _keep_examples(fewshot: FewShot, options: LabelOptions, inputs: Sequence[str]) -> None:
    """Refuse to move support examples out of their folder: the next run would have none."""
    moving = options.mode is SortMode.MOVE and options.sort_into and not options.dry_run
    found = fewshot.support.first_among(inputs) if moving and fewshot.support else None
    if found is not None:
        raise UsageError(
            f"--mode move would move the support example {clean_text(str(found))} out of "
            "its folder: keep the support folder outside the inputs, or use --mode copy"
        )


def _count(pending: Callable[..., Iterator[Path]], events: LabelEvents) -> int:
    """How many files are left to label, saying which sorted folders the walk skips."""

    def skipped(folder: Path) -> None:
        events.notice(
            f"skipping {clean_text(str(folder))}: clipcls sorted files into it ({MARKER})"
        )

    return sum(1 for _ in pending(skipped))


def _files(
    inputs: Sequence[str],
    walk: bool,
    hidden: bool,
    exclude: Path | None,
    on_skip: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """The inputs' files: walked (less sorted folders), or as listed (URLs kept as text)."""
    if walk:
        return iter_image_paths(inputs, hidden, exclude=exclude, on_skip=on_skip)
    return (item if is_url(item) else Path(item) for item in inputs)  # type: ignore[misc]


def _pending(
    files: Callable[..., Iterator[Path]],
    options: LabelOptions,
    recovered: Recovered,
    on_skip: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """The files this run will label: the walk, less sorted folders and rows already written."""
    return (path for path in files(on_skip) if not is_done(recovered, path, options))


@dataclass
class _Writing:
    """The writing phase: the output begun, pending placements finished, each row written
    then its file placed, and a failure or a stop turned into a file that can be resumed."""

    job: LabelJob
    out: LabelOutput
    setup: RunSetup
    kind: Format
    events: LabelEvents

    def run(self, rows: Iterator[Row], total: int, guard: Guard) -> None:
        with guard.installed():
            stream = begin(self.out, self.setup)
            try:
                self._write(stream, rows, total, guard)
            finally:
                with contextlib.suppress(OSError):
                    stream.close()

    def _write(self, stream: TextIO, rows: Iterator[Row], total: int, guard: Guard) -> None:
        job, events, output = self.job, self.events, self.out.path
        resumable = self.kind.resumable
        try:
            writer = self.kind.writer(stream, job.columns, header=self.out.header)
            for problem in job.finish_pending(guard.section):
                events.warn(problem)
            written = job.write_rows(writer, rows, guard.section, events.warn)
            for row in events.track(written, total):
                if row.error is not None:
                    events.warn(row.error)
            writer.close()
            stream.close()  # a full disk can first show here
        except KeyboardInterrupt as interrupt:
            if not resumable:  # Parquet: write the footer, so the rows so far are read
                writer.close()
            stream.flush()
            events.interrupted(interrupt, job.summary, resumable)
            raise
        except OSError as error:
            raise ClipclsError(
                f"cannot write {clean_text(str(output))}: {error.strerror or error}; it holds "
                f"every complete row, so {RESUME_HINT}"
            ) from None
        except ClipclsError as error:  # such as the device running out of memory
            stream.flush()
            where = clean_text(str(output))
            raise type(error)(
                f"{error}; {where} holds every complete row, so {RESUME_HINT}"
            ) from error  # the cause's traceback stays reachable (--debug)
