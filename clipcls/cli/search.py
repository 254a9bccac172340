"""`clipcls search` and `clipcls similar`: the images nearest a text or image query, or nearest
one image, from their embeddings (cached ones are not computed again)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from clipcls.backends.base import Backend
from clipcls.cli.backend_options import chosen_inputs, open_chosen_backend
from clipcls.cli.console import (
    check_output_path,
    embedding_progress,
    fail_if_strict,
    notice,
    open_output,
    reported_errors,
    warn,
)
from clipcls.cli.formats import SearchFormat, SearchFormatOpt, as_format
from clipcls.cli.model_options import model_options
from clipcls.cli.option_groups import RUN, RunOptions, run_options, scale_options
from clipcls.cli.options import OverwriteOpt
from clipcls.cli.search_options import (
    SEARCH_SCALE,
    SIMILAR_SCALE,
    ImagesOpt,
    OutputOpt,
    TemplatesOpt,
    TopKOpt,
)
from clipcls.errors import UsageError
from clipcls.output.formats import RESULT_FORMATS, Format, format_for
from clipcls.prompts import load_templates
from clipcls.search.api import DEFAULT_K
from clipcls.search.api import search as search_images
from clipcls.search.api import similar as similar_images
from clipcls.search.arguments import check_query_images, split_query
from clipcls.search.served import HIT_COLUMNS, Ranking
from clipcls.terms import Query


def _report(ranking: Ranking, run: RunOptions, output: Path | None, fmt: Format) -> None:
    """Warn of unreadable files, write the hits, and exit 1 with --strict if any failed."""
    for _, error in ranking.failures:
        warn(error)  # it names the file, as predict's warnings do
    rows = [(hit.rank, hit.path, hit.score) for hit in ranking.hits]
    with open_output(output) as stream:
        fmt.write_records(stream, HIT_COLUMNS, rows, str(output or "stdout"))
    fail_if_strict(run.strict, len(ranking.failures))


def _open(ctx: typer.Context, inputs: list[str], images: list[Path]) -> tuple[list[str], Backend]:
    """The inputs (those a saved run lists, with --from-embeddings) and the chosen backend."""
    scale, quiet = scale_options(ctx), run_options(ctx).quiet
    inputs, saved = chosen_inputs(ctx, scale, quiet, inputs)
    if saved is not None:  # query images it lacks are embedded by the model (its start)
        return inputs, saved
    return inputs, open_chosen_backend(ctx, scale, quiet)


Run = Callable[[Backend, list[str]], Ranking]


def _run(
    ctx: typer.Context,
    output: Path | None,
    overwrite: bool,
    fmt: SearchFormat | None,
    inputs: list[str],
    images: list[Path],
    ask: Run,
) -> None:
    run = run_options(ctx)
    check_output_path(output, overwrite)
    chosen = format_for(output, as_format(fmt), RESULT_FORMATS)
    check_query_images(images)
    found, backend = _open(ctx, inputs, images)
    _report(ask(backend, found), run, output, chosen)


@model_options()
@RUN.options()
@SEARCH_SCALE
def search(
    ctx: typer.Context,
    args: Annotated[
        list[str] | None,
        typer.Argument(
            help="Folders or files to search (the current folder if none), then the query text.",
            metavar='[PATH]... "QUERY"',
            show_default=False,
        ),
    ] = None,
    image: ImagesOpt = None,
    top_k: TopKOpt = DEFAULT_K,
    templates: TemplatesOpt = None,
    fmt: SearchFormatOpt = None,
    output: OutputOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Find the images nearest a text (`a red car + sunset - blurry`), query images, or both."""
    run = run_options(ctx)
    with reported_errors(run.debug):
        images = list(image or [])
        text, inputs = split_query(
            list(args or []), images, scale_options(ctx).from_embeddings is not None
        )
        query = Query.parse(text) if text else None  # once, before anything opens
        chosen = load_templates(templates) if templates else None

        shown = embedding_progress(run.quiet)

        def ask(backend: Backend, found: list[str]) -> Ranking:
            return search_images(
                backend, found, query, images, top_k, chosen, run.include_hidden, shown,
                None if run.quiet else notice,
            )  # fmt: skip

        _run(ctx, output, overwrite, fmt, inputs, images, ask)


@model_options()
@RUN.options()
@SIMILAR_SCALE
def similar(
    ctx: typer.Context,
    image: Annotated[
        Path, typer.Argument(help="The image to find others like.", show_default=False)
    ],
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="Folders or files to search.", metavar="PATH...", show_default=False),
    ] = None,
    top_k: TopKOpt = DEFAULT_K,
    fmt: SearchFormatOpt = None,
    output: OutputOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Find the images nearest one image (itself left out; its copies come first)."""
    run = run_options(ctx)
    with reported_errors(run.debug):
        saved = scale_options(ctx).from_embeddings is not None
        if not paths and not saved:
            raise UsageError("give the folders to search after the image: similar IMAGE DIR...")

        def ask(backend: Backend, found: list[str]) -> Ranking:
            hidden, shown = run.include_hidden, embedding_progress(run.quiet)
            told = None if run.quiet else notice
            return similar_images(backend, image, found, top_k, hidden, shown, told)

        _run(ctx, output, overwrite, fmt, list(paths or []), [image], ask)
