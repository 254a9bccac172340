"""The backend a command's options choose (--server, else --engine), opened with the CLI's
voice: notices and warnings on stderr, a spinner for slow steps."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from clipcls.backends.base import Backend, BackendConfig, backend_name, open_backend
from clipcls.cli.inputs import given_options, hooks, open_cache, read_inputs
from clipcls.cli.model_options import model_settings
from clipcls.cli.option_groups import ScaleOptions
from clipcls.errors import UsageError

if TYPE_CHECKING:
    from clipcls.backends.saved import SavedEmbeddingsBackend


def explicit(ctx: typer.Context, name: str) -> bool:
    """Whether the option was given on the command line (or by its environment variable)."""
    return getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"


def backend_config(
    ctx: typer.Context, scale: ScaleOptions, quiet: bool, model: str | None = None
) -> BackendConfig:
    """What opening the chosen backend takes, from the command's options; model overrides
    --model (evaluate's one of several). The cache opens when a backend first needs it."""
    settings = model_settings(ctx, model)
    asked = model if model is not None else ctx.params.get("model")
    if model is None and not explicit(ctx, "model"):
        asked = None  # the default model asks nothing of a server
    # A server run caches here too, apart, keyed by the server: re-runs send no image.
    cache = None if scale.no_cache else lambda: open_cache(settings, no_cache=False)
    return BackendConfig(
        settings=settings,
        cache=cache,
        batch_size=scale.batch_size,
        ray_address=scale.ray_address,
        ray_actors=scale.ray_actors,
        server=scale.server,
        embeddings=scale.from_embeddings,
        asked_model=asked,
        server_options=given_options(ctx),
        quiet=quiet,
        hooks=hooks(),
    )


def open_chosen_backend(
    ctx: typer.Context, scale: ScaleOptions, quiet: bool, model: str | None = None
) -> Backend:
    """The backend the options choose, opened (a server is asked what it runs; nothing loads)."""
    name = chosen_name(scale)
    return open_backend(name, backend_config(ctx, scale, quiet, model))


def chosen_name(scale: ScaleOptions) -> str:
    """The backend's registry name; UsageError for options that exclude each other."""
    return backend_name(scale.server, scale.engine.value, scale.from_embeddings)


def chosen_inputs(
    ctx: typer.Context, scale: ScaleOptions, quiet: bool, paths: list[str] | None
) -> tuple[list[str], SavedEmbeddingsBackend | None]:
    """The files to label: the PATH arguments (each must exist), or with --from-embeddings
    those the saved file lists (no PATH may be given), with its backend, already open."""
    if chosen_name(scale) != "embeddings":
        return read_inputs(paths or []), None
    if paths:
        raise UsageError("--from-embeddings scores the files the saved run labeled: give no PATH")
    from clipcls.backends.saved import SavedEmbeddingsBackend

    backend = SavedEmbeddingsBackend(backend_config(ctx, scale, quiet))
    return backend.paths, backend
