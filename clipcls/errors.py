"""The few errors clipcls raises, and the exit codes the CLI maps them to."""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Process exit codes, documented in the README."""

    OK = 0
    ERROR = 1
    USAGE = 2
    INTERRUPTED = 130


class ClipclsError(Exception):
    """Base class: a problem the user can act on, reported as one line."""

    exit_status = ExitStatus.ERROR


class UsageError(ClipclsError):
    """The arguments are wrong: bad labels, templates, paths or options."""

    exit_status = ExitStatus.USAGE


class PromptFileError(UsageError):
    """A labels or templates file cannot be used as written."""


class ModelLoadError(ClipclsError):
    """The model or its weights cannot be built or obtained."""


class UnusableExport(ModelLoadError):
    """An ONNX export folder cannot be used as it is: damaged, changed since its export, or
    made for another onnxruntime. A usage error: the folder given is the wrong input."""

    exit_status = ExitStatus.USAGE


class ImageError(ClipclsError):
    """One image cannot be read or decoded."""


class RecordError(ClipclsError, ValueError):
    """A record read back (a server's answer, a Ray worker's row) is not a valid prediction."""
