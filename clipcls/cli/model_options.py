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
from clipcls.errors import UsageError
from clipcls.images import DEFAULT_MAX_MEGAPIXELS
from clipcls.settings import Device, ModelSettings
from clipcls.userconfig import BUILT_IN, user_defaults, where

# name: (option, default). Every classifying command takes these; they reach it in ctx.params.
MODEL_OPTIONS: dict[str, tuple[Any, Any]] = {
    "model": (ModelOpt, None),  # None: the user's default (clipcls.userconfig)
    "pretrained": (PretrainedOpt, None),
    "device": (DeviceOpt, Device.AUTO),
    "precision": (PrecisionOpt, None),
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
    """The model settings from a command's parsed options (ctx.params); model overridable.
    A model or precision not given comes from $CLIPCLS_MODEL/$CLIPCLS_PRECISION, the config
    file, or the built-in default, in that order (UsageError for a bad one, named)."""
    values = MODEL.values(ctx)
    if model is not None:
        values["model"] = model
    if values["model"] is None or values["precision"] is None:
        defaults = user_defaults()
        values["precision"] = values["precision"] or defaults.precision
        if values["model"] is None:
            values["model"] = defaults.model
            if ctx.params.get("server") is None:  # a server runs its own model
                _check_default(values, defaults.get("model").source)
    return ModelSettings(**values)


def _check_default(values: dict[str, Any], source: str) -> None:
    """A mistyped model from the environment or the config file, said with where it is set."""
    from clipcls.engine.sources import check_model_name

    if source == BUILT_IN:
        return
    try:
        check_model_name(ModelSettings(model=values["model"], pretrained=values["pretrained"]))
    except UsageError as error:
        raise UsageError(f"{error} (the model is set in {where(source)})") from None
