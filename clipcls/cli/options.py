"""Every command-line option, declared once as an Annotated alias, grouped in named help panels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clipcls.cli.flags import QUIET, SERVER, SERVER_ENV
from clipcls.labeling.sorting import SortMode
from clipcls.output.rows import DEFAULT_UNKNOWN
from clipcls.settings import (
    CACHE_ENV,
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    BackendName,
    Device,
    Precision,
)

PathsArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Image files or folders; - reads paths from stdin (none with --from-embeddings).",
        metavar="PATH...",
        show_default=False,
    ),
]


LABELS_PANEL = "Labels and prompts"


LabelsOpt = Annotated[
    str | None,
    typer.Option(
        "--labels",
        "-l",
        rich_help_panel=LABELS_PANEL,
        help="Comma-separated labels, e.g. cat,dog,car.",
    ),
]


LabelsFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--labels-file",
        exists=True,
        dir_okay=False,
        rich_help_panel=LABELS_PANEL,
        help="One label per line; `name: text | text` gives a label several texts.",
    ),
]


TemplatesOpt = Annotated[
    str,
    typer.Option(
        "--templates",
        "-t",
        rich_help_panel=LABELS_PANEL,
        help="Template set name (see `clipcls templates`) or FILE.",
    ),
]


TemplateOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--template",
        rich_help_panel=LABELS_PANEL,
        help='One template such as "a photo of a {}."; repeat for several.',
    ),
]


BatchSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        min=1,
        help="Images per batch.",
        show_default="32 on the CPU, 128 on a GPU",
    ),
]


QuietOpt = Annotated[bool, typer.Option(*QUIET, help="No progress bar or notices.")]


MODEL_PANEL = "Model"


# Defaults that a user may set (clipcls.userconfig): the help says where they come from.
MODEL_DEFAULT = f"$CLIPCLS_MODEL, else `clipcls config`, else {DEFAULT_MODEL}"
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        rich_help_panel=MODEL_PANEL,
        help="open_clip architecture, hf-hub:ORG/REPO, or local-dir:PATH.",
        show_default=MODEL_DEFAULT,
    ),
]


PretrainedOpt = Annotated[
    str | None,
    typer.Option(
        "--pretrained",
        "-p",
        show_default=f"{DEFAULT_PRETRAINED} for {DEFAULT_MODEL}",
        rich_help_panel=MODEL_PANEL,
        help="Pretrained tag (see `clipcls models`) or a local checkpoint FILE.",
    ),
]


DeviceOpt = Annotated[
    Device,
    typer.Option("--device", rich_help_panel=MODEL_PANEL, help="auto: cuda, then mps, then cpu."),
]


PrecisionOpt = Annotated[
    Precision | None,
    typer.Option(
        "--precision",
        rich_help_panel=MODEL_PANEL,
        help="auto: fp16 on CUDA, bf16 on AMX/AVX512-BF16 CPUs, else fp32.",
        show_default="$CLIPCLS_PRECISION, else `clipcls config`, else auto",
    ),
]


CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        envvar=CACHE_ENV,
        file_okay=False,
        rich_help_panel=MODEL_PANEL,
        help="Where downloaded weights and embeddings are cached.",
        show_default="the user cache dir",
    ),
]


OfflineOpt = Annotated[
    bool,
    typer.Option("--offline", rich_help_panel=MODEL_PANEL, help="Use cached weights only."),
]


SPEED_PANEL = "Speed"


ExactDecodeOpt = Annotated[
    bool,
    typer.Option(
        "--exact-decode",
        rich_help_panel=SPEED_PANEL,
        help="Decode JPEGs at full size (slower; the default draft decode agrees to cos 0.995).",
    ),
]


WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        rich_help_panel=SPEED_PANEL,
        help="Image decode threads.",
        show_default="from the cores",
    ),
]


NoCacheOpt = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        rich_help_panel=SPEED_PANEL,
        help="Neither read nor write the embedding cache.",
    ),
]


FILES_PANEL = "Input files"


IncludeHiddenOpt = Annotated[
    bool,
    typer.Option(
        "--include-hidden",
        rich_help_panel=FILES_PANEL,
        help="Also take hidden files and folders (names starting with a dot).",
    ),
]


MaxMegapixelsOpt = Annotated[
    float,
    typer.Option(
        "--max-megapixels",
        min=0.001,
        rich_help_panel=FILES_PANEL,
        help="Refuse images whose declared size is larger (decompression bombs).",
    ),
]


StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        rich_help_panel=FILES_PANEL,
        help="Exit 1 if any image could not be read (all results are still written).",
    ),
]


DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")]


JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout, for scripts.")]


SORT_PANEL = "Sorting into folders"
LabelOutputOpt = Annotated[
    Path,
    typer.Option("--output", "-o", help="CSV, JSONL or Parquet file to write (by extension)."),
]


ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue an existing output; skip done images.")
]

OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]

RecordTopKOpt = Annotated[
    int, typer.Option("--top-k", "-k", min=1, help="Also record the next labels.")
]

UnknownLabelOpt = Annotated[
    str | None,
    typer.Option(
        "--unknown-label",
        help="Label for images below --threshold.",
        show_default=DEFAULT_UNKNOWN,
    ),
]

SortIntoOpt = Annotated[
    Path | None,
    typer.Option(
        "--sort-into",
        file_okay=False,
        rich_help_panel=SORT_PANEL,
        help="Put each image in DIR/<label>/.",
    ),
]

SortModeOpt = Annotated[
    SortMode,
    typer.Option(
        "--mode",
        rich_help_panel=SORT_PANEL,
        help="How files get there: copy leaves every file where it is; move takes it out.",
    ),
]

SCALE_PANEL = "Scale"
EngineOpt = Annotated[
    BackendName,
    typer.Option(
        "--engine",
        rich_help_panel=SCALE_PANEL,
        help="local: this process; ray: a Ray cluster (pip install 'clipcls\\[ray]').",
    ),
]
ServerOpt = Annotated[
    str | None,
    typer.Option(
        *SERVER,
        envvar=SERVER_ENV,
        rich_help_panel=SCALE_PANEL,
        help="A `clipcls serve` URL to classify on, with no model loaded here "
        "(API key from $CLIPCLS_API_KEY).",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        rich_help_panel=SCALE_PANEL,
        help="Cluster to join.",
        show_default="$RAY_ADDRESS, else a local Ray for this run",
    ),
]
RayActorsOpt = Annotated[
    int | None,
    typer.Option(
        "--ray-actors",
        min=1,
        rich_help_panel=SCALE_PANEL,
        help="Model actors.",
        show_default="one per GPU, else one per two CPUs",
    ),
]
FromEmbeddingsOpt = Annotated[
    Path | None,
    typer.Option(
        "--from-embeddings",
        exists=True,
        dir_okay=False,
        rich_help_panel=SCALE_PANEL,
        help="Score the embeddings a `label --save-embeddings` run saved; no image is read.",
    ),
]
SaveEmbeddingsOpt = Annotated[
    bool,
    typer.Option(
        "--save-embeddings",
        help="Also write each image's embedding (JSONL: an array field; Parquet: a list column).",
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        rich_help_panel=SORT_PANEL,
        help="Record planned destinations; touch no files.",
    ),
]
