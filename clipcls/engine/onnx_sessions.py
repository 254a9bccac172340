"""ONNX Runtime sessions for an export's towers, fast to open: the providers a device asks for,
and each tower's graph optimized once for this machine and kept in the cache.

ONNX Runtime spends most of a cold start optimizing the graph and prepacking weights (0.7-0.8 s
for ViT-B-32's image tower on 2 cores). The first session of a tower saves its optimized graph
into the cache folder; later ones load that copy with optimizations off and without prepacking
(0.02-0.05 s). ONNX Runtime warns that a graph saved after its optimizations may hold transforms
for the CPU that made it, so the copy is keyed by the export's identity, ONNX Runtime's version,
the provider and this CPU's feature flags; a copy that fails to load is set aside for the plain
export. Copies are written into a private temporary folder and renamed into place whole, so two
processes never see half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from clipcls.errors import ClipclsError, UnusableExport, UsageError

OPTIMIZED = "onnx-optimized"  # the cache's subfolder of per-machine optimized graphs
PROVIDERS_ENV = "CLIPCLS_ONNX_PROVIDERS"  # e.g. OpenVINOExecutionProvider,CPUExecutionProvider
INSTALL = "pip install 'clipcls[onnx]'"
DEVICE_PROVIDERS = {
    "cuda": "CUDAExecutionProvider",  # onnxruntime-gpu
    "mps": "CoreMLExecutionProvider",
}


def onnxruntime() -> Any:
    """The onnxruntime module, or a one-line error saying how to install it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ClipclsError(f"the ONNX runtime needs onnxruntime: {INSTALL}") from None
    ort.set_default_logger_severity(3)  # its warnings are not the user's business
    return ort


def available_providers() -> list[str]:
    """The execution providers this onnxruntime offers (empty without onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def pick_providers(device: str) -> list[str]:
    """The providers for a device: $CLIPCLS_ONNX_PROVIDERS if set, else the device's own
    accelerator provider (an error if this onnxruntime lacks it), then the CPU."""
    available = available_providers()
    named = [p.strip() for p in os.environ.get(PROVIDERS_ENV, "").split(",") if p.strip()]
    if named:
        missing = [p for p in named if p not in available]
        if missing:
            raise UsageError(
                f"${PROVIDERS_ENV} names {', '.join(missing)}, which this onnxruntime lacks "
                f"(it has {', '.join(available)})"
            )
        return named
    wanted = DEVICE_PROVIDERS.get(device)
    if wanted is None:
        return ["CPUExecutionProvider"]
    if wanted not in available:
        package = "onnxruntime-gpu" if device == "cuda" else "an onnxruntime build with CoreML"
        raise UsageError(
            f"--device {device} with the ONNX runtime needs {wanted}, which this onnxruntime "
            f"lacks: install {package}, or use --runtime torch"
        )
    return [wanted, "CPUExecutionProvider"]


@cache
def _cpu_flags() -> str:
    """This CPU's feature flags (Linux), part of an optimized graph's key."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _optimized_key(identity: str, tower: str, providers: list[str], version: str) -> str:
    parts = [identity, tower, ",".join(providers), version, platform.machine(), _cpu_flags()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def open_session(
    graph: Path, identity: str, cache_dir: Path | None, providers: list[str], threads: int
) -> Any:
    """A session for one tower's graph, through this machine's optimized copy when the cache
    holds one (made on first use)."""
    ort = onnxruntime()
    tower = graph.stem
    copy = None
    if cache_dir is not None:
        key = _optimized_key(identity, tower, providers, ort.__version__)
        copy = cache_dir / OPTIMIZED / key / f"{tower}.onnx"
    if copy is not None and copy.is_file():
        try:
            return _session(ort, copy, providers, threads, fast=True)
        except Exception:  # a damaged or foreign copy: set it aside, use the export itself
            with contextlib.suppress(OSError):
                shutil.rmtree(copy.parent)
    if copy is None:
        return _session(ort, graph, providers, threads, fast=False)
    try:
        return _session(ort, graph, providers, threads, fast=False, save_to=copy)
    except Exception:  # the cache cannot take the copy (a bad graph fails again just below)
        return _session(ort, graph, providers, threads, fast=False)


def _session(
    ort: Any,
    graph: Path,
    providers: list[str],
    threads: int,
    fast: bool,
    save_to: Path | None = None,
) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if fast:  # already optimized for this machine: skip the work and the prepacking
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.add_session_config_entry("session.disable_prepacking", "1")
    else:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if save_to is None:
        return _create(ort, graph, options, providers)
    save_to.parent.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=save_to.parent.parent))
    try:
        options.optimized_model_filepath = str(staging / save_to.name)
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", f"{save_to.name}.data"
        )
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
        session = _create(ort, graph, options, providers)
        with contextlib.suppress(OSError):  # another process put its copy there first
            staging.rename(save_to.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return session


def _create(ort: Any, graph: Path, options: Any, providers: list[str]) -> Any:
    try:
        return ort.InferenceSession(str(graph), sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises its own types, with long messages
        text = " ".join(str(error).split())
        if "opset" in text.lower() or "ir_version" in text.lower():
            raise UnusableExport(
                f"onnxruntime {ort.__version__} cannot run {graph}: {text[:200]} "
                "(upgrade onnxruntime, or export with an older opset)"
            ) from None
        raise UnusableExport(f"onnxruntime cannot load {graph}: {text[:300]}") from None
