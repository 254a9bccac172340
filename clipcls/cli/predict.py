"""`clipcls predict`: classify images against labels and print the top-k for each."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from clipcls.classify import Classifier
from clipcls.cli.clock import timing
from clipcls.cli.console import (
    check_output_path,
    fail_if_strict,
    notice,
    open_output,
    reported_errors,
    stderr,
    tracked,
    warn,
)
from clipcls.cli.formats import PredictFormatOpt
from clipcls.cli.inputs import load_classifier, open_cache, read_inputs, server_classifier
from clipcls.cli.model_options import model_options, model_settings
from clipcls.cli.option_groups import LABELS, RUN, SCALE, labels_choice, run_options, scale_options
from clipcls.cli.options import OverwriteOpt, PathsArg
from clipcls.errors import ClipclsError, UsageError
from clipcls.images import iter_image_paths
from clipcls.output.files import Format, format_for
from clipcls.output.rows import Columns, to_row
from clipcls.output.writers import make_writer, plural
from clipcls.server.client import RemoteClassifier

EXAMPLES = """
[bold]Examples[/bold]

  clipcls predict photos/ --labels cat,dog,car
  clipcls predict a.jpg b.png --labels-file labels.txt --templates simple --top-k 3
  find . -name '*.jpg' | clipcls predict - --labels cat,dog --format jsonl | jq .
  clipcls predict scans/ --labels "tumor,normal tissue" --templates histology -o out.csv
  clipcls predict photo.jpg --labels cat,dog --server http://127.0.0.1:8765
"""


@model_options()
@RUN.options()
@SCALE.options(only=("server", "batch_size", "no_cache"))
@LABELS.options()
def predict(
    ctx: typer.Context,
    paths: PathsArg,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Labels shown per image.")] = 5,
    fmt: PredictFormatOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE, not stdout.")
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Classify images against your labels and show the top-k labels of each."""
    run, scale = run_options(ctx), scale_options(ctx)
    quiet, include_hidden, strict = run.quiet, run.include_hidden, run.strict
    batch_size, no_cache, server = scale.batch_size, scale.no_cache, scale.server
    with reported_errors(run.debug):
        choice = labels_choice(ctx)
        label_list, template_set = choice.labels, choice.templates
        inputs = read_inputs(paths)
        total = sum(1 for _ in iter_image_paths(inputs, include_hidden))
        if total == 0:
            raise UsageError(f"no images found in {', '.join(inputs)}")
        check_output_path(output, overwrite)
        fmt = format_for(output, fmt)
        if fmt is Format.PARQUET and output is None and sys.stdout.isatty():
            raise UsageError(
                "-f parquet is binary, not for a terminal: give -o FILE.parquet, or send "
                "stdout to a file or a pipe"
            )
        classifier: Classifier | RemoteClassifier
        if server is not None:
            classifier, _ = server_classifier(ctx, server, label_list, template_set, quiet)
        else:
            settings = model_settings(ctx)
            classifier, _ = load_classifier(
                settings,
                label_list,
                template_set,
                batch_size,
                quiet,
                open_cache(settings, no_cache),
                lambda: iter_image_paths(inputs, include_hidden),
            )
        show_progress = not quiet and stderr.is_terminal
        started = time.monotonic()
        failures = 0
        with open_output(output) as stream:
            columns = Columns(min(top_k, len(label_list)))
            predictions = classifier.classify_paths(iter_image_paths(inputs, include_hidden))
            try:
                writer = make_writer(fmt, stream, columns)
                for prediction in tracked(predictions, total, show_progress, "classifying"):
                    writer.write(to_row(prediction, columns.top_k))
                    if prediction.error is not None:
                        failures += 1
                        warn(prediction.error)
                writer.close()
            except BrokenPipeError:
                raise  # `| head` closed the pipe: Typer exits quietly
            except OSError as error:
                where = output or "stdout"
                raise ClipclsError(f"cannot write {where}: {error.strerror or error}") from None
        if not quiet and stderr.is_terminal:
            elapsed = time.monotonic() - started
            notice(f"{timing(total, elapsed)}; {failures} unreadable")
        elif failures and not quiet:
            notice(f"{failures} of {plural(total, 'image')} could not be read")
        fail_if_strict(strict, failures)
