"""A label run's output file: locked for one writer, checked against its recorded setup before
any model loads, and truncated or appended to only once the run is sure to start."""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from clipcls.errors import UsageError
from clipcls.labeling.lock import lock_exclusively
from clipcls.labeling.manifest import (
    RunSetup,
    differences,
    other_source,
    read_setup,
    remove_setup,
    sidecar,
    write_setup,
)
from clipcls.labeling.resume import Recovered, recover
from clipcls.output.files import check_target
from clipcls.output.formats import Format
from clipcls.output.rows import Columns
from clipcls.pathtext import text_to_path


@dataclass
class LabelOutput:
    """An output file held for this run; `recovered` is set when resuming rows already in it."""

    path: Path
    fd: int  # holds the lock until closed
    created: bool
    recorded: RunSetup | None = None
    recovered: Recovered | None = None
    begun: bool = False

    @property
    def header(self) -> bool:
        """Whether the file starts empty, so a CSV needs its header."""
        return self.recovered is None or self.recovered.complete_bytes == 0

    def close(self) -> None:
        """Release the lock; remove the file if this run created it and wrote nothing."""
        with contextlib.suppress(OSError):
            if self.created and not self.begun and os.fstat(self.fd).st_size == 0:
                os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _refuse_mix(path: Path, recorded: RunSetup | None, setup: RunSetup) -> None:
    if recorded is None:
        raise UsageError(
            f"{path} has no setup record ({sidecar(path).name} beside it), so it was not written "
            "by this clipcls and cannot be resumed; nothing was changed. Use --overwrite to "
            "replace it"
        )
    elsewhere = other_source(recorded, setup)
    if elsewhere is not None:  # the other settings matter only where the rows were made
        raise UsageError(f"cannot resume {path}: {elsewhere}")
    found = differences(recorded, setup)
    if found:
        raise UsageError(
            f"cannot resume {path}: {'; '.join(found)}. Run with the same setup, or use "
            "--overwrite to start again"
        )


def open_label_output(
    path: Path,
    kind: Format,
    columns: Columns,
    setup: RunSetup,
    resume: bool,
    overwrite: bool,
    keep_destinations: bool = False,
) -> LabelOutput:
    """Lock the output and, when resuming, check and read it; nothing is written yet."""
    check_target(path, resume, overwrite)
    existed = os.path.lexists(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as error:
        raise UsageError(f"cannot write --output {path}: {error.strerror or error}") from None
    output = LabelOutput(path, fd, created=not existed)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"--output {path} is not a regular file")
        lock_exclusively(fd, path, "it")
        if resume and os.fstat(fd).st_size > 0:
            recorded = read_setup(path)
            _refuse_mix(path, recorded, setup)
            assert recorded is not None
            cwd = text_to_path(recorded.cwd)
            output.recorded = recorded
            output.recovered = recover(path, kind, columns, cwd, keep_destinations)
    except BaseException:
        output.close()
        raise
    return output


PRECISIONS = ("fp32", "bf16", "fp16")  # what a loaded model reports (a server or Ray: maybe auto)


def check_loaded_model(
    output: LabelOutput, setup: RunSetup, model: str, precision: str | None = None
) -> None:
    """Refuse to resume with other weights, where only loading could tell (default tags), or in
    another precision than the rows were computed in (auto may pick bf16 where fp32 ran)."""
    recorded = output.recorded
    if recorded is not None and recorded.precision in PRECISIONS and precision in PRECISIONS:
        if recorded.precision != precision:
            raise UsageError(
                f"cannot resume {output.path}: its rows were computed in {recorded.precision}, "
                f"this run computes in {precision}: resume with --precision {recorded.precision}, "
                "or use --overwrite to start again"
            )
    if recorded is None or recorded.model == model:
        return
    if recorded.model_key is not None and setup.model_key is not None:
        return  # the same weights under another name: compared before loading
    raise UsageError(
        f"cannot resume {output.path}: it was labeled with {recorded.model}, not {model}. "
        "Resume with the same model, or use --overwrite to start again"
    )


def begin(output: LabelOutput, setup: RunSetup) -> TextIO:
    """Start writing: replace or trim the file, record the setup, and open it for appending."""
    fd, path = output.fd, output.path
    try:
        if output.recovered is None:
            remove_setup(path)  # a kill from here on leaves an empty file: a fresh start
            os.ftruncate(fd, 0)
            write_setup(path, setup)
        elif output.recovered.dropped_bytes:
            os.ftruncate(fd, output.recovered.complete_bytes)
        stream = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115
    except OSError as error:
        raise UsageError(f"cannot write --output {path}: {error.strerror or error}") from None
    output.begun = True
    return stream
