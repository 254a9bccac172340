"""The options every classifying command shares, one option group (see option_groups) read
back as ModelSettings."""

from __future__ import annotations

from typing import Any

import typer

from clipcls.cli.option_groups import OptionGroup
from clipcls.cli.options import (
    CacheDirOpt,
    DeviceOpt,
    ExactDecodeOpt,
    MaxMegapixelsOpt,
    ModelOpt,
    OfflineOpt,
    PrecisionOpt,
    PretrainedOpt,
    WorkersOpt,
)
from clipcls.images import DEFAULT_MAX_MEGAPIXELS
from clipcls.settings import (
    DEFAULT_MODEL,
    Device,
    ModelSettings,
    Precision,
)

# name: (option, default). Every classifying command takes these; they reach it in ctx.params.
MODEL_OPTIONS: dict[str, tuple[Any, Any]] = {
    "model": (ModelOpt, DEFAULT_MODEL),
    "pretrained": (PretrainedOpt, None),
    "device": (DeviceOpt, Device.AUTO),
    "precision": (PrecisionOpt, Precision.AUTO),
    "cache_dir": (CacheDirOpt, None),
    "offline": (OfflineOpt, False),
    "exact_decode": (ExactDecodeOpt, False),
    "workers": (WorkersOpt, None),
    "max_megapixels": (MaxMegapixelsOpt, DEFAULT_MAX_MEGAPIXELS),
}

MODEL: OptionGroup[ModelSettings] = OptionGroup(MODEL_OPTIONS, ModelSettings)

# The decorator: @model_options() or @model_options(skip=("model",)).
model_options = MODEL.options


def model_settings(ctx: typer.Context, model: str | None = None) -> ModelSettings:
    """The model settings from a command's parsed options (ctx.params); model overridable."""
    values = MODEL.values(ctx)
    if model is not None:
        values["model"] = model
    return ModelSettings(**values)
