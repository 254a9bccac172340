"""The one place a model is built: the local backend, the Ray actors, the server's worker,
`models export` and Classifier.load all call open_model, and nothing else constructs one.

A runtime is what runs a model's towers: torch through open_clip (model.py's ClipModel), or ONNX
Runtime on an export folder (onnx_model.py's OnnxModel, which imports no torch). Each is one
module with a callable that takes ModelSettings and returns a Model, plus one entry in RUNTIMES;
`ModelSettings.runtime` picks it (runtimes.py resolves auto), and since the settings travel
whole to Ray actors and the server's worker, every site follows. The module is imported only
when its runtime is opened, so `--help` and cache-only runs import no torch. The factory builds
encoders; scoring stays outside the engine.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

from clipcls.engine.local_dirs import note_local_dir
from clipcls.engine.runtimes import choose_runtime
from clipcls.errors import UsageError
from clipcls.pipeline import Encoder
from clipcls.settings import ModelSettings

# runtime name -> "module:callable(settings) -> Model"
RUNTIMES: dict[str, str] = {
    "torch": "clipcls.engine.model:ClipModel",
    "onnx": "clipcls.engine.onnx_model:OnnxModel",
}


class Model(Encoder, Protocol):
    """An encoder as a runtime loads it: with its weights' identity, and able to write itself
    out whole."""

    weights: str  # name:tag, or the digest of the files' bytes (what a server tells its clients)

    def export(self, folder: Path) -> None:
        """Write a self-contained local-dir: folder that loads with no network."""


def open_model(settings: ModelSettings) -> Model:
    """Load the model settings describe, with the runtime they name (auto resolved first)."""
    runtime = choose_runtime(settings)
    if runtime not in RUNTIMES:
        raise UsageError(f"no runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    module, _, attribute = RUNTIMES[runtime].partition(":")
    # Looked up at each call, so a test that replaces the class in its module is obeyed.
    model: Model = getattr(importlib.import_module(module), attribute)(settings)
    note_local_dir(settings)  # for `clipcls models --cached`
    return model
