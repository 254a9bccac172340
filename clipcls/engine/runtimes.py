"""Which runtime runs a model (`--runtime auto|torch|onnx`), decided in milliseconds without
importing either: an ONNX export folder runs on ONNX Runtime; `auto` uses ONNX Runtime where
the cache holds an export of the same weights (`clipcls models prepare`) and torch would run
the model in fp32 on the CPU, and torch everywhere else: GPUs, models with no export yet, and
CPUs with AMX or AVX512-BF16, where torch's bf16 runs the image tower 4-5x faster than fp32
(there a start-up of seconds buys more than that on any sizeable run)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from clipcls.engine.names import known_tags
from clipcls.engine.onnx_folder import MANIFEST, is_onnx_folder, prepared_folder
from clipcls.engine.sources import LOCAL_DIR, model_identity, schema_source
from clipcls.errors import UsageError
from clipcls.settings import DEFAULT_PRETRAINED, Device, ModelSettings, Precision, Runtime


def expected_identity(settings: ModelSettings) -> str | None:
    """The weights identity a torch load of these settings would report (ClipModel.weights),
    told without loading: the default tag resolved as resolve_source resolves it."""
    known = model_identity(settings).key
    if known is not None or schema_source(settings.model) is not None:
        return known
    arch = settings.model.partition(":")[0].replace("/", "-")
    tags = (known_tags() or {}).get(arch)
    if not tags:
        return None
    return f"{arch}:{DEFAULT_PRETRAINED if DEFAULT_PRETRAINED in tags else tags[0]}"


def onnx_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def prepared_export(settings: ModelSettings) -> Path | None:
    """The cache's export of the weights settings name (`clipcls models prepare`), if any."""
    identity = expected_identity(settings)
    if identity is None:
        return None
    folder = prepared_folder(settings.resolved_cache_dir(), identity)
    return folder if (folder / MANIFEST).is_file() else None


def _export_folder_named(settings: ModelSettings) -> bool:
    return settings.model.startswith(LOCAL_DIR) and is_onnx_folder(
        settings.model.removeprefix(LOCAL_DIR)
    )


def cpu_fp32_work(settings: ModelSettings) -> bool:
    """torch would run the model in fp32 on the CPU: the device asked for, or auto with no GPU
    it could use; the precision fp32, or auto on a CPU without fast bf16."""
    from clipcls.engine.hardware import cpuinfo_fast_bf16, gpu_driver_present

    if settings.precision is Precision.AUTO:
        fp32 = not cpuinfo_fast_bf16()
    else:
        fp32 = settings.precision is Precision.FP32
    if not fp32 or settings.device is Device.CUDA or settings.device is Device.MPS:
        return False
    return settings.device is Device.CPU or (sys.platform != "darwin" and not gpu_driver_present())


def choose_runtime(settings: ModelSettings) -> str:
    """The runtime settings resolve to: "torch" or "onnx" (UsageError where they conflict)."""
    runtime = settings.runtime
    if _export_folder_named(settings):
        if runtime == Runtime.TORCH.value:
            raise UsageError(
                f"--model {settings.model} is an ONNX export: it runs with --runtime onnx "
                "(or auto); for torch, give the model it was exported from"
            )
        return Runtime.ONNX.value
    if runtime != Runtime.AUTO.value:
        return runtime  # torch, onnx, or a runtime a test registered
    if cpu_fp32_work(settings) and onnx_installed() and prepared_export(settings) is not None:
        return Runtime.ONNX.value
    return Runtime.TORCH.value
