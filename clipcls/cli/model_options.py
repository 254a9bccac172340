"""The options every classifying command shares, one option group (see option_groups) read
back as ModelSettings."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from clipcls.cli.option_groups import OptionGroup
from clipcls.cli.options import (
    MODEL_PANEL,
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
from clipcls.settings import Device, ModelSettings, Runtime
from clipcls.userconfig import BUILT_IN, user_defaults, where

RuntimeOpt = Annotated[
    Runtime | None,
    typer.Option(
        "--runtime",
        rich_help_panel=MODEL_PANEL,
        help="What runs the model: torch, onnx (an export: `clipcls models prepare`, no torch "
        "imported), or auto: onnx on the CPU where the cache holds an export, else torch.",
        show_default="$CLIPCLS_RUNTIME, else `clipcls config`, else auto",
    ),
]

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
    "runtime": (RuntimeOpt, None),  # None: the user's default (clipcls.userconfig)
}

MODEL: OptionGroup[ModelSettings] = OptionGroup(MODEL_OPTIONS, ModelSettings)

# The decorator: @model_options() or @model_options(skip=("model",)).
model_options = MODEL.options


def model_settings(ctx: typer.Context, model: str | None = None) -> ModelSettings:
    """The model settings from a command's parsed options (ctx.params); model overridable.
    A model, precision or runtime not given comes from $CLIPCLS_MODEL/_PRECISION/_RUNTIME, the
    config file, or the built-in default, in that order (UsageError for a bad one, named)."""
    values = MODEL.values(ctx)
    if model is not None:
        values["model"] = model
    if None in (values["model"], values["precision"], values["runtime"]):
        defaults = user_defaults()
        values["precision"] = values["precision"] or defaults.precision
        values["runtime"] = (values["runtime"] or defaults.runtime).value
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
