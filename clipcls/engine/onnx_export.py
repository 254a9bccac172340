"""`clipcls models export --onnx` and `models prepare`: write a model's two towers, tokenizer and
preprocessing as an ONNX folder (ONNX_SPEC), placed only after both towers pass the parity gate
against the torch model (onnx_parity), in a temporary folder beside the target renamed last."""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from clipcls.engine.factory import Model, open_model
from clipcls.engine.onnx_folder import (
    MANIFEST,
    is_onnx_folder,
    prepared_folder,
    read_folder,
    write_manifest,
)
from clipcls.engine.onnx_parity import Parity
from clipcls.engine.sources import LOCAL_DIR, random_weights_notices
from clipcls.errors import ModelLoadError, UsageError
from clipcls.settings import Device, ModelSettings, Precision
from clipcls.version import __version__

# A folder being written: hidden, and named for what it is, so a killed export's leftover is
# recognisable (and never taken for an export: it is not the target's name).
PARTIAL_PREFIX = ".clipcls-onnx-"
PARTIAL_SUFFIX = ".partial"
NEEDED = ("onnx", "onnxscript", "onnxruntime")
INSTALL = "pip install 'clipcls[onnx]'"


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how closely it matches the torch model."""

    folder: Path
    model: str
    source_weights: str
    parity: Parity
    seconds: float  # loading excluded: export, parity gate and writing
    notices: tuple[str, ...] = ()


def check_exportable(model: str, folder: Path | None) -> None:
    """Refuse before any model loads: the exporter's packages missing, a target folder that
    exists and is not empty, a source that already is an ONNX export."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"exporting to ONNX needs {', '.join(missing)}: {INSTALL}")
    if folder is not None and (folder.is_symlink() or folder.exists()):
        if folder.is_symlink() or not folder.is_dir() or any(folder.iterdir()):
            raise UsageError(f"{folder} exists and is not an empty folder")
    if model.startswith(LOCAL_DIR) and is_onnx_folder(model.removeprefix(LOCAL_DIR)):
        raise UsageError(f"--model {model} already is an ONNX export ({MANIFEST}): nothing to do")


def torch_settings(settings: ModelSettings) -> ModelSettings:
    """The settings an export loads its source with: torch, on the CPU, in fp32."""
    return replace(settings, runtime="torch", device=Device.CPU, precision=Precision.FP32)


def export_onnx(settings: ModelSettings, folder: Path, name: str | None = None) -> ExportReport:
    """Load the model settings name (torch, CPU, fp32) and export it into folder, a new or
    empty folder; name replaces the model's name in the manifest (random weights' architecture)."""
    check_exportable(settings.model, folder)
    return export_loaded(open_model(torch_settings(settings)), folder, name)


def export_random_onnx(
    arch: str, folder: Path, seed: int, tiny: bool, cache_dir: Path | None
) -> ExportReport:
    """Export random weights of an architecture (written to a scratch folder, then gone)."""
    from clipcls.engine.random_model import write_random_model

    check_exportable(arch, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Beside the target, named as a partial folder: a killed export's leftovers lie together.
    scratch = _partial_folder(folder.parent)
    try:
        source = write_random_model(scratch / "model", arch, seed=seed, tiny=tiny)
        settings = ModelSettings(f"{LOCAL_DIR}{source}", cache_dir=cache_dir)
        return export_onnx(settings, folder, name=arch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def prepare_onnx(settings: ModelSettings) -> tuple[ExportReport | None, Path]:
    """Load (downloading if needed) and export into the cache, where `--runtime auto` looks:
    (report, folder), report None when that folder already holds the export."""
    check_exportable(settings.model, None)
    loaded = open_model(torch_settings(settings))
    cache = settings.resolved_cache_dir()
    folder = prepared_folder(cache, loaded.weights)
    if _sound_export(folder, cache):
        return None, folder
    _set_aside(folder)  # a damaged export, or files that are no export: the new one replaces it
    try:
        return export_loaded(loaded, folder), folder
    except UsageError:
        if _sound_export(folder, cache):  # another process prepared it meanwhile
            return None, folder
        raise


def _sound_export(folder: Path, memo: Path) -> bool:
    """Whether folder holds an export whose files all match its manifest."""
    if not is_onnx_folder(folder):
        return False
    try:
        read_folder(folder, memo)
    except ModelLoadError:
        return False
    return True


def _set_aside(folder: Path) -> None:
    """Move what is at folder out of the way (renamed as a partial folder, then removed)."""
    if folder.is_symlink():
        folder.unlink()
    if not folder.exists():
        return
    aside = _partial_folder(folder.parent)
    try:
        os.replace(folder, aside)
    except OSError as error:
        raise UsageError(f"cannot replace {folder}: {error.strerror or error}") from None
    shutil.rmtree(aside, ignore_errors=True)


def export_loaded(loaded: Model, folder: Path, name: str | None = None) -> ExportReport:
    """Export a loaded torch model into folder (new or empty); nothing is left behind on
    failure, and the folder appears whole or not at all."""
    from clipcls.engine.model import ClipModel
    from clipcls.engine.onnx_parity import check_parity
    from clipcls.engine.onnx_towers import check_family, tokenizer_entry, write_towers

    if not isinstance(loaded, ClipModel):
        raise UsageError(f"cannot export {type(loaded).__name__} to ONNX: only torch models")
    started = time.perf_counter()
    model, preprocess, tokenizer = loaded.torch_parts()
    check_family(model)
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_folder(folder.parent)
    try:
        manifest = _describe(loaded, name)
        manifest["tokenizer"] = tokenizer_entry(tokenizer, partial)
        manifest.update(write_towers(model, partial))
        parity = check_parity(model, preprocess, tokenizer, partial, manifest["text"])
        manifest["parity"] = parity.__dict__
        write_manifest(partial, manifest)
        _place(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    model_name = str(manifest["model"])
    return ExportReport(folder, model_name, loaded.weights, parity, seconds, loaded.info.notices)


def _partial_folder(parent: Path) -> Path:
    """A new folder beside the target, made with the user's umask (as the target would be)."""
    for _ in range(100):
        candidate = parent / f"{PARTIAL_PREFIX}{secrets.token_hex(6)}{PARTIAL_SUFFIX}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise UsageError(f"cannot make a temporary folder in {parent}")


def _place(partial: Path, folder: Path) -> None:
    """Rename the finished folder into place: over an empty folder, never over files."""
    try:
        os.rename(partial, folder)
    except OSError as error:
        why = error.strerror or str(error)
        raise UsageError(f"cannot put the export at {folder}: {why}") from None


def _describe(loaded: Any, name: str | None) -> dict[str, Any]:
    """The manifest's fields about the source model and the versions that wrote it."""
    import onnx
    import open_clip
    import torch

    from clipcls.engine.onnx_towers import source_digest

    source = loaded.source
    model, _, _ = loaded.torch_parts()
    return {
        "model": name or source.name,
        "pretrained": None if source.is_file else source.pretrained,
        "source_weights": loaded.weights,
        "source_digest": source_digest(model),
        "random_weights": bool(random_weights_notices(source.name)),
        "logit_scale": float(loaded.logit_scale),
        "logit_bias": loaded.logit_bias,
        "preprocess": _preprocess(open_clip.get_model_preprocess_cfg(model)),
        "exported_with": {
            "clipcls": __version__,
            "torch": torch.__version__,
            "open_clip": open_clip.__version__,
            "onnx": onnx.__version__,
        },
    }


def _preprocess(config: dict[str, Any]) -> dict[str, Any]:
    """open_clip's preprocess config in the manifest's shape: size as [H, W], lists of floats."""
    size = config["size"]
    height, width = (size, size) if isinstance(size, int) else size
    return {
        "size": [int(height), int(width)],
        "mode": str(config.get("mode", "RGB")),
        "mean": [float(v) for v in config["mean"]],
        "std": [float(v) for v in config["std"]],
        "interpolation": str(config.get("interpolation", "bicubic")),
        "resize_mode": str(config.get("resize_mode", "shortest")),
        "fill_color": int(config.get("fill_color", 0)),
    }
