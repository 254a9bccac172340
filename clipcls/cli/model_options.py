"""The options every classifying command shares, added to each by one decorator (like llm's
@tool_options) and read back as ModelSettings."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import typer

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

Command = TypeVar("Command", bound=Callable[..., Any])


def model_settings(ctx: typer.Context, model: str | None = None) -> ModelSettings:
    """The model settings from a command's parsed options (ctx.params); model overridable."""
    values = {name: ctx.params[name] for name in MODEL_OPTIONS if name in ctx.params}
    if model is not None:
        values["model"] = model
    return ModelSettings(**values)


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


def model_options(*, skip: tuple[str, ...] = ()) -> Callable[[Command], Command]:
    """Give a command the model and speed options, declared once here (like llm's
    @tool_options); the command reads them with model_settings(ctx), not as parameters."""
    shared = {name: spec for name, spec in MODEL_OPTIONS.items() if name not in skip}

    def decorate(command: Command) -> Command:
        own = inspect.signature(command, eval_str=True)

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            for name in shared:
                kwargs.pop(name, None)
            return command(*args, **kwargs)

        extra = [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=option
            )
            for name, (option, default) in shared.items()
        ]
        run.__signature__ = own.replace(parameters=[*own.parameters.values(), *extra])  # type: ignore[attr-defined]
        hints = typing.get_type_hints(command, include_extras=True)
        run.__annotations__ = {**hints, **{name: spec[0] for name, spec in shared.items()}}
        return run  # type: ignore[return-value]

    return decorate
