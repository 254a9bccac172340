"""`clipcls models export --onnx` and `clipcls models prepare`: ONNX exports of a model (which
run with no torch), said with their parity figures against the torch model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clipcls.cli.console import notice, reported_errors, status, warn
from clipcls.cli.options import CacheDirOpt, DebugOpt, OfflineOpt, PretrainedOpt
from clipcls.errors import UsageError
from clipcls.settings import Device, ModelSettings, Precision

if TYPE_CHECKING:
    from clipcls.engine.onnx_export import ExportReport

PREPARE_EXAMPLES = """
[bold]Examples[/bold]

  clipcls models prepare ViT-B-32 --pretrained datacomp_xl_s13b_b90k
  clipcls models export ViT-B-32 ./vit-b-32-onnx --onnx   # a folder of your own instead
"""


def export_onnx_folder(
    model: str,
    folder: Path,
    pretrained: str | None,
    random: tuple[bool, bool, int],  # --random, --tiny, --seed
    cache_dir: Path | None,
    offline: bool,
) -> None:
    """`models export MODEL DIR --onnx`: load (or make random) weights and export them."""
    from clipcls.engine.onnx_export import check_exportable, export_onnx, export_random_onnx
    from clipcls.engine.sources import RANDOM_NOTICE

    is_random, tiny, seed = random
    check_exportable(model, folder)  # before any model loads
    if is_random:
        if pretrained is not None or ":" in model:
            raise UsageError("--random makes its own weights: give an architecture, no weights")
        with status(f"exporting random {model} to {folder}"):
            report = export_random_onnx(model, folder, seed, tiny, cache_dir)
        warn(RANDOM_NOTICE.format(name=f"local-dir:{folder}"))
    else:
        settings = ModelSettings(model, pretrained, Device.CPU, Precision.FP32, cache_dir, offline)
        with status(f"exporting {model} to {folder}"):
            report = export_onnx(settings, folder)
        for line in report.notices:
            warn(line)
    _say_parity(report)
    notice(f"wrote {folder}: use it with --model local-dir:{folder}")


def prepare(
    model: Annotated[str, typer.Argument(help="Architecture, hf-hub:ORG/REPO or local-dir:PATH.")],
    pretrained: PretrainedOpt = None,
    cache_dir: CacheDirOpt = None,
    offline: OfflineOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Download a model (if not cached) and export it to ONNX in the cache, where
    `--runtime auto` finds it: later runs start without torch."""
    from clipcls.engine.onnx_export import prepare_onnx

    with reported_errors(debug):
        settings = ModelSettings(model, pretrained, Device.CPU, Precision.FP32, cache_dir, offline)
        with status(f"preparing {model}"):
            report, folder = prepare_onnx(settings)
        if report is None:
            notice(f"already prepared: {folder}")
            return
        for line in report.notices:
            warn(line)
        _say_parity(report)
        notice(f"prepared {report.source_weights} in {folder}: --runtime auto uses it")


def _say_parity(report: ExportReport) -> None:
    parity = report.parity
    notice(
        f"parity with torch: max |diff| image {parity.image_max_abs:.1e} "
        f"({parity.image_unit_max_abs:.1e} normalized), text {parity.text_max_abs:.1e} "
        f"({parity.text_unit_max_abs:.1e} normalized) over {parity.inputs}"
    )
