"""`clipcls predict`: classify images against labels and print the top-k for each."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from clipcls.classify import DEFAULT_BATCH_SIZE, Classifier
from clipcls.errors import UsageError
from clipcls.images import STDIN, check_inputs, iter_image_paths, read_path_list
from clipcls.labels import Label, parse_labels, read_labels_file
from clipcls.model import ClipModel, ModelInfo
from clipcls.options import (
    CacheDirOpt,
    DebugOpt,
    DeviceOpt,
    ModelOpt,
    OfflineOpt,
    PrecisionOpt,
    PretrainedOpt,
    check_output_path,
    model_settings,
    notice,
    open_output,
    reported_errors,
    stderr,
    tracked,
    warn,
)
from clipcls.prompts import DEFAULT_TEMPLATES, TemplateSet, load_templates, single_templates
from clipcls.render import Format, make_writer
from clipcls.rows import Columns, to_row
from clipcls.settings import DEFAULT_MODEL, Device, ModelSettings, Precision

EXAMPLES = """
[bold]Examples[/bold]

  clipcls predict photos/ --labels cat,dog,car
  clipcls predict a.jpg b.png --labels-file labels.txt --templates simple --top-k 3
  find . -name '*.jpg' | clipcls predict - --labels cat,dog --format jsonl | jq .
  clipcls predict scans/ --labels "tumor,normal tissue" --templates histology -o out.csv
"""

INPUT_PANEL = "Labels and prompts"
LabelsOpt = Annotated[
    str | None,
    typer.Option(
        "--labels",
        "-l",
        rich_help_panel=INPUT_PANEL,
        help="Comma-separated labels, e.g. cat,dog,car.",
    ),
]
LabelsFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--labels-file",
        exists=True,
        dir_okay=False,
        rich_help_panel=INPUT_PANEL,
        help="One label per line; `name: text | text` gives a label several texts.",
    ),
]
TemplatesOpt = Annotated[
    str,
    typer.Option(
        "--templates",
        "-t",
        rich_help_panel=INPUT_PANEL,
        help="Template set name (see `clipcls templates`) or FILE.",
    ),
]
TemplateOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--template",
        rich_help_panel=INPUT_PANEL,
        help='One template such as "a photo of a {}."; repeat for several.',
    ),
]


def read_labels(labels: str | None, labels_file: Path | None) -> tuple[Label, ...]:
    """Labels from --labels or --labels-file (exactly one of them)."""
    if (labels is None) == (labels_file is None):
        raise UsageError("give exactly one of --labels or --labels-file")
    found = parse_labels(labels) if labels is not None else read_labels_file(labels_file or "")
    if len(found) == 1:
        warn(f"only one label ({found[0].name}): its probability is always 1.0; add alternatives")
    return found


def read_templates(templates: str, template: list[str] | None) -> TemplateSet:
    """A template set from --template (repeatable) or --templates NAME|FILE."""
    if template:
        if templates != DEFAULT_TEMPLATES:
            raise UsageError("give either --templates or --template, not both")
        return single_templates(template)
    return load_templates(templates)


def read_inputs(paths: list[str]) -> list[str]:
    """The input paths, with `-` replaced by the paths listed on stdin; all must exist."""
    inputs: list[str] = []
    for item in paths:
        inputs.extend(read_path_list(sys.stdin) if item == STDIN else [item])
    check_inputs(inputs)
    return inputs


def describe(info: ModelInfo) -> str:
    """The one stderr line that says which model runs where."""
    weights = f" ({info.pretrained})" if info.pretrained else ""
    return f"model {info.model}{weights} on {info.device}, {info.precision}"


def load_classifier(
    settings: ModelSettings,
    labels: tuple[Label, ...],
    templates: TemplateSet,
    batch_size: int,
    quiet: bool,
) -> Classifier:
    """Load the model and embed the prompts, saying on stderr what runs where."""
    spinner = contextlib.nullcontext if quiet else stderr.status
    with spinner("loading model"):
        encoder = ClipModel(settings)
    for line in encoder.info.notices:
        warn(line)
    if not quiet:
        notice(describe(encoder.info))
    n_prompts = sum(len(label.texts) for label in labels) * len(templates.templates)
    with spinner(f"embedding {n_prompts} prompts"):
        return Classifier(encoder, labels, templates, batch_size)


def predict(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Image files or folders; - reads paths from stdin.",
            metavar="PATH...",
            show_default=False,
        ),
    ],
    labels: LabelsOpt = None,
    labels_file: LabelsFileOpt = None,
    templates: TemplatesOpt = DEFAULT_TEMPLATES,
    template: TemplateOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Labels shown per image.")] = 5,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.TABLE,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE, not stdout.")
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Images per batch.")
    ] = DEFAULT_BATCH_SIZE,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or notices.")
    ] = False,
    model: ModelOpt = DEFAULT_MODEL,
    pretrained: PretrainedOpt = None,
    device: DeviceOpt = Device.AUTO,
    precision: PrecisionOpt = Precision.AUTO,
    cache_dir: CacheDirOpt = None,
    offline: OfflineOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Classify images against your labels and show the top-k labels of each."""
    with reported_errors(debug):
        label_list = read_labels(labels, labels_file)
        template_set = read_templates(templates, template)
        inputs = read_inputs(paths)
        total = sum(1 for _ in iter_image_paths(inputs))
        if total == 0:
            raise UsageError(f"no images found in {', '.join(inputs)}")
        check_output_path(output)
        settings = model_settings(model, pretrained, device, precision, cache_dir, offline)
        classifier = load_classifier(settings, label_list, template_set, batch_size, quiet)
        show_progress = not quiet and stderr.is_terminal
        failures = 0
        with open_output(output) as stream:
            columns = Columns(min(top_k, len(label_list)))
            writer = make_writer(fmt, stream, columns)
            predictions = classifier.classify_paths(iter_image_paths(inputs))
            for prediction in tracked(predictions, total, show_progress, "classifying"):
                writer.write(to_row(prediction, columns.top_k))
                if prediction.error is not None:
                    failures += 1
                    warn(prediction.error)
            writer.close()
        if failures and not quiet:
            notice(f"{failures} of {total} images could not be read")


predict.__doc__ = (predict.__doc__ or "") + "\n" + EXAMPLES
