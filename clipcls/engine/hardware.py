"""Where a model runs: device, precision and how the CPU cores are shared."""

from __future__ import annotations

import ast
import glob
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipcls.errors import UsageError
from clipcls.settings import Device, Precision


def pick_device(requested: Device) -> str:
    """Resolve auto to cuda, then mps, then cpu; refuse a device this torch cannot use."""
    import torch

    has_cuda = torch.cuda.is_available()
    has_mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if requested is Device.AUTO:
        return "cuda" if has_cuda else "mps" if has_mps else "cpu"
    if requested is Device.CUDA and not has_cuda:
        raise UsageError(_no_cuda(torch.__version__, torch.version.cuda))
    if requested is Device.MPS and not has_mps:
        raise UsageError("--device mps: Apple MPS is not available on this machine")
    return str(requested.value)


def _no_cuda(version: str, cuda: str | None) -> str:
    """Why --device cuda cannot work here: no GPU visible, or a torch built without CUDA."""
    if cuda is None:
        return (
            "--device cuda: this torch is a CPU-only build; install a CUDA build of torch "
            "(see pytorch.org) to use a GPU"
        )
    return (
        f"--device cuda: no GPU is visible (torch {version} has CUDA "
        f"{cuda}; check the driver with nvidia-smi and $CUDA_VISIBLE_DEVICES)"
    )


def _torch_build() -> dict[str, str | None] | None:
    """torch's version.py (`__version__`, `cuda`, `hip`) read as data, without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    found: dict[str, str | None] = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and isinstance(value, ast.Constant):
            if value.value is None or isinstance(value.value, str):
                found[target.id] = value.value
    return found if "__version__" in found and "cuda" in found else None


def cuda_absent_reason() -> str | None:
    """Why no CUDA device can exist here, told without importing torch; None when unsure.

    The rule: on Linux, a torch built without CUDA (and without ROCm) has none; so has a machine
    with no NVIDIA driver loaded (no /proc/driver/nvidia/version and no /dev/nvidia0..N), unless
    it is WSL (/dev/dxg), which has neither. Anything else (macOS, Windows, ROCm builds, a
    driver present) is left to torch.
    """
    build = _torch_build()
    if sys.platform != "linux" or build is None or build.get("hip"):
        return None
    if build["cuda"] is None or not gpu_driver_present():
        return _no_cuda(str(build["__version__"]), build["cuda"])
    return None


def gpu_driver_present() -> bool:
    """An NVIDIA driver is loaded (or this is WSL, whose GPUs show as /dev/dxg)."""
    return bool(
        os.path.exists("/proc/driver/nvidia/version")
        or glob.glob("/dev/nvidia[0-9]*")
        or os.path.exists("/dev/dxg")
    )


def check_device_early(device: Device, precision: Precision) -> None:
    """Refuse --device cuda without a GPU and fp16 on the CPU before torch is imported, where
    cuda_absent_reason is sure; pick_device and pick_precision check the rest."""
    if device not in (Device.CUDA, Device.AUTO) and precision is not Precision.FP16:
        return
    no_cuda = cuda_absent_reason()
    if device is Device.CUDA and no_cuda is not None:
        raise UsageError(no_cuda)
    # auto without CUDA on Linux is the CPU (MPS is Apple's)
    on_cpu = device is Device.CPU or (device is Device.AUTO and no_cuda is not None)
    if precision is Precision.FP16 and on_cpu:
        raise UsageError(FP16_ON_CPU)


FP16_ON_CPU = "--precision fp16 is not supported on the CPU: use fp32 or bf16"


def pick_precision(requested: Precision, device: str) -> str:
    """Resolve auto: fp16 on CUDA, bf16 on CPUs with fast bf16, else fp32; no fp16 on the CPU.

    bf16 weights keep image embeddings within cosine 0.997 of fp32 (benchmarks/speed.py
    measures it) and run 3-4x faster on AMX CPUs.
    """
    if requested is Precision.AUTO:
        if device == "cuda":
            return "fp16"
        return "bf16" if device == "cpu" and cpu_has_fast_bf16() else "fp32"
    if requested is Precision.FP16 and device == "cpu":
        raise UsageError(FP16_ON_CPU)
    return str(requested.value)


@dataclass(frozen=True)
class ThreadPlan:
    """How the CPU cores are shared: torch's compute threads and image decode threads."""

    torch_threads: int
    decode_workers: int


def available_cores() -> int:
    """Cores this process may run on (respects affinity masks and containers' cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def plan_threads(device: str, workers: int | None = None, cores: int | None = None) -> ThreadPlan:
    """Never more busy threads than cores.

    On the CPU, decoding and the model take turns, each with every core: a batch is decoded by
    `cores` threads, then the model runs on `cores` torch threads. Running both at once would
    put more threads than cores to work, and torch's spinning threads then lose most of their
    speed. On a GPU the cores only decode, ahead of the device, and the main thread feeds it.
    """
    cores = cores or available_cores()
    if device != "cpu":
        return ThreadPlan(torch_threads=1, decode_workers=max(1, workers or cores - 1))
    return ThreadPlan(torch_threads=cores, decode_workers=cores if workers is None else workers)


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX512-BF16, where bf16 weights run about 3x faster than fp32."""
    import torch

    cpu = getattr(torch._C, "_cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    if cpu is not None and any(hasattr(cpu, name) for name in checks):
        return any(getattr(cpu, name, lambda: False)() for name in checks)
    return cpuinfo_fast_bf16()


def cpuinfo_fast_bf16() -> bool:
    """cpu_has_fast_bf16 as /proc/cpuinfo tells it, without torch (False where unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = info.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


@dataclass(frozen=True)
class RuntimeChoice:
    """The torch build here, and the device and precision a run with auto settings picks."""

    torch_version: str | None  # None: torch does not import
    torch_cuda: str | None  # the CUDA version torch was built for; None: a CPU-only build
    device: str
    device_reason: str
    precision: str
    precision_reason: str


def runtime_choice() -> RuntimeChoice:
    """Import torch and tell what `--device auto --precision auto` would pick, and why."""
    import torch

    device = pick_device(Device.AUTO)
    if device == "cuda":
        why = f"torch sees {torch.cuda.device_count()} CUDA GPU(s): {torch.cuda.get_device_name(0)}"
    elif device == "mps":
        why = "Apple MPS is available"
    else:
        why = "no CUDA GPU" + (f" ({reason})" if (reason := _why_no_cuda(torch)) else "")
        why += ", no Apple MPS"
    precision = pick_precision(Precision.AUTO, device)
    precision_reasons = {
        "fp16": "fp16 on CUDA",
        "bf16": "this CPU has AMX or AVX512-BF16",
        "fp32": "fp32 on this device" if device != "cpu" else "this CPU has no fast bf16",
    }
    return RuntimeChoice(
        torch.__version__,
        torch.version.cuda,
        device,
        why,
        precision,
        precision_reasons[precision],
    )


def _why_no_cuda(torch: Any) -> str:
    if torch.version.cuda is None:
        return "a CPU-only build of torch"
    return "" if gpu_driver_present() else "no NVIDIA driver loaded"
