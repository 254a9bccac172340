"""Options several commands share, declared once per group (like llm's @tool_options): a
decorator adds a group to a command's signature, and the command reads it back as a dataclass."""

from __future__ import annotations

import copy
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

import typer

from clipcls.cli.inputs import read_labels, read_templates
from clipcls.cli.options import (
    BatchSizeOpt,
    DebugOpt,
    EngineOpt,
    FromEmbeddingsOpt,
    IncludeHiddenOpt,
    LabelsFileOpt,
    LabelsOpt,
    NoCacheOpt,
    QuietOpt,
    RayActorsOpt,
    RayAddressOpt,
    ServerOpt,
    StrictOpt,
    TemplateOpt,
    TemplatesOpt,
)
from clipcls.labels import Label
from clipcls.prompts import DEFAULT_TEMPLATES, TemplateSet
from clipcls.settings import BackendName

Command = TypeVar("Command", bound=Callable[..., Any])
Read = TypeVar("Read")


class OptionGroup(Generic[Read]):
    """A named set of options, each `name: (Annotated option, default)`, and how a command
    reads them back: build(**values). A leading group goes before the command's own options
    (where its help panel is listed first); the others after them, in decorator order from
    the function up."""

    def __init__(
        self,
        options: dict[str, tuple[Any, Any]],
        build: Callable[..., Read],
        *,
        leading: bool = False,
    ) -> None:
        self.specs = options
        self.build = build
        self.leading = leading

    def values(self, ctx: typer.Context) -> dict[str, Any]:
        """The group's values as parsed (ctx.params); a default where the command skipped one."""
        return {name: ctx.params.get(name, default) for name, (_, default) in self.specs.items()}

    def read(self, ctx: typer.Context) -> Read:
        """The group's values as its dataclass."""
        return self.build(**self.values(ctx))

    def options(
        self,
        *,
        skip: tuple[str, ...] = (),
        only: tuple[str, ...] | None = None,
        helps: dict[str, str] | None = None,
    ) -> Callable[[Command], Command]:
        """A decorator giving a command this group's options (only some, or all but skip, with
        the command's own help text for some: helps); they reach it in ctx.params, not as
        parameters."""
        names = [n for n in self.specs if n not in skip and (only is None or n in only)]
        worded = helps or {}
        shared = {
            name: (_reworded(option, worded[name]) if name in worded else option, default)
            for name, (option, default) in ((n, self.specs[n]) for n in names)
        }

        def decorate(command: Command) -> Command:
            @functools.wraps(command)
            def run(*args: Any, **kwargs: Any) -> Any:
                for name in shared:
                    kwargs.pop(name, None)
                return command(*args, **kwargs)

            run.__signature__ = _with_options(command, shared, self.leading)  # type: ignore[attr-defined]
            hints = typing.get_type_hints(command, include_extras=True)
            run.__annotations__ = {**hints, **{name: spec[0] for name, spec in shared.items()}}
            return run  # type: ignore[return-value]

        return decorate


def _reworded(option: Any, text: str) -> Any:
    """An Annotated option with its help replaced: one command's words for a shared option."""
    base, info = typing.get_args(option)  # the type and its typer.Option, nothing more
    info = copy.copy(info)
    info.help = text
    return Annotated[base, info]


def _with_options(
    command: Callable[..., Any], shared: dict[str, tuple[Any, Any]], leading: bool
) -> inspect.Signature:
    """The command's signature with the shared options added: at the end, or (leading) before
    its first parameter with a default, where they may stand as positional-or-keyword."""
    signature = inspect.signature(command, eval_str=True)
    own = list(signature.parameters.values())
    at = len(own)
    if leading:
        at = next((i for i, p in enumerate(own) if p.default is not inspect.Parameter.empty), at)
    kind = (
        inspect.Parameter.KEYWORD_ONLY
        if at == len(own)
        else inspect.Parameter.POSITIONAL_OR_KEYWORD
    )
    extra = [
        inspect.Parameter(name, kind, default=default, annotation=option)
        for name, (option, default) in shared.items()
    ]
    return signature.replace(parameters=[*own[:at], *extra, *own[at:]])


@dataclass(frozen=True)
class LabelChoice:
    """The labels to score and the templates that turn each into prompts."""

    labels: tuple[Label, ...]
    templates: TemplateSet


def _choose_labels(
    labels: str | None, labels_file: Path | None, templates: str, template: list[str] | None
) -> LabelChoice:
    return LabelChoice(read_labels(labels, labels_file), read_templates(templates, template))


@dataclass(frozen=True)
class ScaleOptions:
    """Where the work runs (here, a Ray cluster or a server) and in what batches."""

    engine: BackendName = BackendName.LOCAL
    ray_address: str | None = None
    ray_actors: int | None = None
    server: str | None = None
    batch_size: int | None = None
    no_cache: bool = False
    from_embeddings: Path | None = None  # a --save-embeddings output to score, not images


@dataclass(frozen=True)
class RunOptions:
    """How a run talks and how strict it is about the files it walks."""

    quiet: bool = False
    include_hidden: bool = False
    strict: bool = False
    debug: bool = False


LABELS: OptionGroup[LabelChoice] = OptionGroup(
    {
        "labels": (LabelsOpt, None),
        "labels_file": (LabelsFileOpt, None),
        "templates": (TemplatesOpt, DEFAULT_TEMPLATES),
        "template": (TemplateOpt, None),
    },
    _choose_labels,
    leading=True,
)

SCALE: OptionGroup[ScaleOptions] = OptionGroup(
    {
        "engine": (EngineOpt, BackendName.LOCAL),
        "ray_address": (RayAddressOpt, None),
        "ray_actors": (RayActorsOpt, None),
        "server": (ServerOpt, None),
        "batch_size": (BatchSizeOpt, None),
        "no_cache": (NoCacheOpt, False),
        "from_embeddings": (FromEmbeddingsOpt, None),
    },
    ScaleOptions,
)

RUN: OptionGroup[RunOptions] = OptionGroup(
    {
        "quiet": (QuietOpt, False),
        "include_hidden": (IncludeHiddenOpt, False),
        "strict": (StrictOpt, False),
        "debug": (DebugOpt, False),
    },
    RunOptions,
)


def labels_choice(ctx: typer.Context) -> LabelChoice:
    """The labels and templates given (--labels/--labels-file, --templates/--template)."""
    return LABELS.read(ctx)


def scale_options(ctx: typer.Context) -> ScaleOptions:
    """The scale options given (--engine, --ray-*, --server, --batch-size, --no-cache,
    --from-embeddings)."""
    return SCALE.read(ctx)


def run_options(ctx: typer.Context) -> RunOptions:
    """The run options given (--quiet, --include-hidden, --strict, --debug)."""
    return RUN.read(ctx)
