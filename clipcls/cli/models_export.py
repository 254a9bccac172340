"""`clipcls models export`: write a self-contained local-dir: folder, of trained weights (cache
first, then download) or of random ones (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clipcls.cli.console import notice, reported_errors, status, stderr, warn
from clipcls.cli.options import CacheDirOpt, DebugOpt, OfflineOpt, PretrainedOpt
from clipcls.errors import UsageError
from clipcls.settings import Device, ModelSettings, Precision

EXPORT_EXAMPLES = """
[bold]Examples[/bold]

  clipcls models export ViT-B-32 --pretrained datacomp_xl_s13b_b90k ./vit-b-32
  clipcls predict photos/ --labels cat,dog --model local-dir:./vit-b-32 --offline
  clipcls models export ViT-B-32 ./tiny-random --random --tiny   # no network, meaningless
  clipcls models export ViT-B-32 ./vit-b-32-onnx --onnx   # runs without torch
"""


def export(
    model: Annotated[str, typer.Argument(help="Architecture, hf-hub:ORG/REPO or local-dir:PATH.")],
    folder: Annotated[
        Path, typer.Argument(help="New folder to write (must not exist or be empty).")
    ],
    pretrained: PretrainedOpt = None,
    random: Annotated[
        bool,
        typer.Option(
            "--random",
            help="Random weights, no download: to try clipcls out; predictions are meaningless.",
        ),
    ] = False,
    tiny: Annotated[
        bool, typer.Option("--tiny", help="With --random: a few-MB model of the same family.")
    ] = False,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="With --random: the seed of the weights.")
    ] = 0,
    onnx: Annotated[
        bool,
        typer.Option(
            "--onnx", help="Both towers as ONNX, checked against torch: runs with no torch."
        ),
    ] = False,
    cache_dir: CacheDirOpt = None,
    offline: OfflineOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write a self-contained local-dir: folder that loads with no network."""
    with reported_errors(debug):
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise UsageError(f"{folder} exists and is not an empty folder")
        if tiny and not random:
            raise UsageError("--tiny only goes with --random")
        if onnx:
            from clipcls.cli.models_onnx import export_onnx_folder

            export_onnx_folder(model, folder, pretrained, (random, tiny, seed), cache_dir, offline)
            return
        if random:
            _export_random(model, folder, pretrained, tiny, seed)
            return
        _export_loaded(model, folder, pretrained, cache_dir, offline)


def _export_random(model: str, folder: Path, pretrained: str | None, tiny: bool, seed: int) -> None:
    """Write random weights of an architecture: nothing is downloaded."""
    from clipcls.engine.random_model import tiny_note, write_random_model
    from clipcls.engine.sources import RANDOM_NOTICE

    if pretrained is not None or ":" in model:
        raise UsageError("--random makes its own weights: give an architecture, no weights")
    size = "tiny " if tiny else ""
    with status(f"writing {folder}"):
        write_random_model(folder, model, seed=seed, tiny=tiny)
    warn(RANDOM_NOTICE.format(name=f"local-dir:{folder}"))
    note = tiny_note(model) if tiny else None
    if note:
        notice(note)
    notice(f"wrote {folder} ({size}{model}, seed {seed}): use it with --model local-dir:{folder}")


def _export_loaded(
    model: str, folder: Path, pretrained: str | None, cache_dir: Path | None, offline: bool
) -> None:
    """Load a model (cache first, then download) and write it whole."""
    from clipcls.engine.factory import open_model

    settings = ModelSettings(model, pretrained, Device.CPU, Precision.FP32, cache_dir, offline)
    with stderr.status("loading model"):
        loaded = open_model(settings)
    for line in loaded.info.notices:
        warn(line)
    with status(f"writing {folder}"):
        loaded.export(folder)
    notice(f"wrote {folder}: use it with --model local-dir:{folder}")
