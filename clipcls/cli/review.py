"""`clipcls review`: a local page to check a label run's least sure answers, and its exports."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clipcls.cli.console import notice, reported_errors, warn
from clipcls.cli.interrupts import InterruptGuard
from clipcls.cli.options import DebugOpt
from clipcls.errors import ClipclsError, UsageError
from clipcls.output.writers import plural

if TYPE_CHECKING:  # the review package loads when the command runs, not for --help
    from clipcls.review.table import ReviewTable

EXAMPLES = """
[bold]Examples[/bold]

  clipcls review labels.csv                      # prints the page's address with its token
  clipcls review labels.csv --open --port 0      # a free port, opened in the browser
  clipcls review labels.csv --export corrected.csv
  clipcls review labels.jsonl --export-support examples/
  clipcls review sorted.csv --apply              # move sorted files to their corrected folders
  clipcls review labels.csv --host 0.0.0.0 --api-key "$(openssl rand -hex 16)"
"""


def review(
    output: Annotated[
        Path,
        typer.Argument(
            help="The CSV, JSONL or Parquet file `clipcls label` wrote.",
            metavar="OUTPUT",
            show_default=False,
        ),
    ],
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0: a free one).")
    ] = 8766,
    host: Annotated[
        str,
        typer.Option(help="Address to listen on; off loopback only with --api-key."),
    ] = "127.0.0.1",
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="CLIPCLS_REVIEW_API_KEY",
            help="The page's token (16+ letters, digits, -_.~) instead of a random one.",
            show_default=False,
        ),
    ] = None,
    old_key: Annotated[  # the names before serve's --api-key was matched, kept working
        str | None, typer.Option("--key", envvar="CLIPCLS_REVIEW_KEY", hidden=True)
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the page in the browser.")
    ] = False,
    unknown_label: Annotated[
        str | None,
        typer.Option(
            "--unknown-label",
            help="The label `x` gives (default: the run's unknown label).",
            show_default=False,
        ),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Write the output with the corrected labels beside the model's "
            "(model_label, model_probability) and a `reviewed` column (.csv or .jsonl), then exit.",
        ),
    ] = None,
    export_support: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            file_okay=False,
            help="Link the reviewed images into DIR/<label>/ (a --support folder), then exit.",
        ),
    ] = None,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="A --sort-into run: move or re-link sorted files to their corrected label "
            "folder (never overwriting), then exit.",
        ),
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Review a label run in the browser, least sure first; export or apply the corrections."""
    from clipcls.review.server import check_host
    from clipcls.review.table import load_review

    key = api_key if api_key is not None else old_key
    with reported_errors(debug):
        check_host(host, key)
        table = load_review(output, unknown_label)
        for note in table.notes:
            warn(note)
        if export is not None or export_support is not None or apply:
            from clipcls.review.finish import finish_review

            guard = InterruptGuard()  # a stop waits for the move under way and its record
            with guard.installed():
                finished = finish_review(table, export, export_support, apply, warn, guard.section)
            for line in finished.lines:
                notice(line)
            if finished.failure is not None:
                raise ClipclsError(finished.failure)
            return
        _serve(table, host, port, key, open_browser)


def _serve(table: ReviewTable, host: str, port: int, key: str | None, open_browser: bool) -> None:
    """Serve the page until Ctrl-C; the address (with its token) is the one line on stdout."""
    from clipcls.review.api import ReviewApi
    from clipcls.review.log import ReviewLog
    from clipcls.review.server import ReviewServer, new_token
    from clipcls.review.thumbs import Thumbs

    log = ReviewLog.open(table)
    try:
        api = ReviewApi(table, log, Thumbs())
        try:
            server = ReviewServer(api, host, port, key or new_token())
        except OSError as error:
            raise UsageError(f"cannot listen on {host}:{port}: {error.strerror}") from None
        try:
            typer.echo(f"review: {server.url}")
            progress = api.progress()
            notice(
                f"{plural(len(table.rows), 'row')} by margin ({table.margin_source}): "
                f"{progress['reviewed']} reviewed, {progress['changed']} changed, "
                f"{progress['left']} left; Ctrl-C stops"
            )
            if open_browser:
                webbrowser.open(server.url)
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:  # the way to stop: every decision is on disk already
            api.close()  # a finish action under way ends first (an apply's move and record)
            progress = api.progress()
            notice(f"stopped: {progress['reviewed']} reviewed, {progress['changed']} changed")
        finally:
            server.server_close()
    finally:
        log.close()
