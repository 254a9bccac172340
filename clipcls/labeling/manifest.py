"""A label run's setup, kept beside its output (`OUT.clipcls.json`), so that `--resume` can
refuse, before any model loads, to mix rows made with other labels, templates, model, support
set or calibration."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from clipcls.digests import short_identity
from clipcls.errors import UsageError
from clipcls.labels import Label
from clipcls.output.files import temporary_beside
from clipcls.version import __version__

SUFFIX = ".clipcls.json"
FORMAT = "clipcls-label-run/1"
MAX_BYTES = 64 << 20  # a setup record with 100,000 labels is ~10 MB; anything larger is foreign


@dataclass(frozen=True)
class RunSetup:
    """Everything that decides a run's rows; two runs may share an output only if these match."""

    format: str
    columns: tuple[str, ...]
    labels: tuple[tuple[str, tuple[str, ...]], ...]
    templates: tuple[str, ...]
    top_k: int
    threshold: float | str | tuple[Any, ...] | None  # P, "auto", or (label, P) pairs
    unknown_label: str | None  # only with a threshold
    sort_into: str | None  # resolved, as pathtext writes paths
    mode: str | None
    model_key: str | None  # identity.ModelIdentity.key
    model: str = ""  # as the rows record it, set once the model is loaded
    cwd: str = ""  # relative paths in the rows are relative to this folder (as pathtext)
    support: str | None = None  # the support set's identity (--support)
    calibration: str | None = None  # the calibration's temperature and file digest
    multi_label: bool = False  # every label at or above its threshold (--multi-label)
    # The server the rows came through (client.wire.base_url); None: this machine computed them.
    server: str | None = None
    # The precision the rows were computed in (None: not recorded): a resume must compute in it.
    # torch fp32 and an ONNX export of the same weights agree to 1e-4, and may continue each other.
    precision: str | None = None

    @staticmethod
    def label_texts(labels: tuple[Label, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Labels as (name, texts) pairs."""
        return tuple((label.name, label.texts) for label in labels)


# What each setting is called in a refusal, in the order they are checked.
NAMES = {
    "format": "format",
    "labels": "labels",
    "templates": "templates",
    "multi_label": "--multi-label",
    "top_k": "--top-k",
    "threshold": "--threshold",
    "unknown_label": "--unknown-label",
    "sort_into": "--sort-into",
    "mode": "--mode",
    "support": "--support",
    "calibration": "--calibration",
    "model_key": "model weights",
    "columns": "columns",  # follow from the settings above; named only if nothing else differs
}


def _show(value: Any) -> str:
    if isinstance(value, tuple | list) and value and isinstance(value[0], tuple | list):
        return ",".join(str(item[0]) for item in value)  # label names
    if isinstance(value, tuple | list):
        return " | ".join(str(item) for item in value)
    return "none" if value is None else str(value)


def differences(recorded: RunSetup, current: RunSetup) -> list[str]:
    """What differs between the recorded setup and this run's, one phrase each."""
    found = []
    for field, name in NAMES.items():
        old, new = getattr(recorded, field), getattr(current, field)
        if field == "model_key" and (old is None or new is None):
            continue  # compared once the model is loaded
        if field == "model_key" and old != new:
            found.append(
                f"the model's weights are not those of {recorded.model or 'that run'} "
                f"({short_identity(old)}) that wrote it: {current.model or 'this run'} has "
                f"{short_identity(new)}"
            )
        elif old != new and not (field == "columns" and found):
            found.append(f"{name} was {_show(old)!r}, now {_show(new)!r}")
    return found


def other_source(recorded: RunSetup, current: RunSetup) -> str | None:
    """Why rows from elsewhere cannot be continued here, or None: what a server sent is its
    word (it may repeat any weights' digest), never mixed with what this machine computes, nor
    with another server's."""
    if recorded.server == current.server:
        return None
    if recorded.server is None:
        came = f"were computed on this machine, not by the server at {current.server}"
        how = "without --server"
    else:
        elsewhere = "this machine" if current.server is None else current.server
        came = f"came through the server at {recorded.server}, not {elsewhere}"
        how = f"with --server {recorded.server}"
    return (
        f"its rows {came}: resume {how}, or write a new output (another --output, or --overwrite)"
    )


def sidecar(output: Path) -> Path:
    """Where an output's setup record lives."""
    return output.with_name(output.name + SUFFIX)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


def _legacy(key: Any) -> bool:
    """A file's identity as earlier versions wrote it (size and a hash of both ends): not comparable
    with a digest of the whole content, so the model is compared by name once it is loaded."""
    is_file = isinstance(key, str) and (key.startswith("local-dir:") or "+file:" in key)
    return is_file and "sha256:" not in key


def read_setup(output: Path) -> RunSetup | None:
    """The setup recorded beside output, None if there is none; UsageError if unreadable."""
    path = sidecar(output)
    if not path.exists():
        return None
    try:
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            raise ValueError("not a setup record")
        data = json.loads(path.read_bytes())
        if data.pop("record") != FORMAT:
            raise ValueError("another record format")
        data.pop("clipcls_version", None)
        data.pop("written", None)
        setup = RunSetup(**{key: _tuples(value) for key, value in data.items()})
        return replace(setup, model_key=None) if _legacy(setup.model_key) else setup
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        raise UsageError(
            f"cannot read {path}, the setup record of {output}: use --overwrite to start again"
        ) from None


def write_setup(output: Path, setup: RunSetup) -> None:
    """Record the setup beside output, atomically."""
    path = sidecar(output)
    record = {"record": FORMAT, "clipcls_version": __version__, **asdict(setup)}
    record["written"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    temporary: Path | None = None
    try:
        fd, temporary = temporary_beside(path)  # never a name planted there, followed
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(record, indent=1) + "\n")
        os.replace(temporary, path)
    except OSError as error:
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.unlink()
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from None


def remove_setup(output: Path) -> None:
    """Forget the setup of an output about to be replaced."""
    with contextlib.suppress(FileNotFoundError):
        sidecar(output).unlink()
