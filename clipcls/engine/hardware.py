"""Where a model runs: device, precision and how the CPU cores are shared."""

from __future__ import annotations

import os
from dataclasses import dataclass
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
        raise UsageError(_no_cuda(torch))
    if requested is Device.MPS and not has_mps:
        raise UsageError("--device mps: Apple MPS is not available on this machine")
    return str(requested.value)


def _no_cuda(torch: Any) -> str:
    """Why --device cuda cannot work here: no GPU visible, or a torch built without CUDA."""
    if torch.version.cuda is None:
        return (
            "--device cuda: this torch is a CPU-only build; install a CUDA build of torch "
            "(see pytorch.org) to use a GPU"
        )
    return (
        f"--device cuda: no GPU is visible (torch {torch.__version__} has CUDA "
        f"{torch.version.cuda}; check the driver with nvidia-smi and $CUDA_VISIBLE_DEVICES)"
    )


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
        raise UsageError("--precision fp16 is not supported on the CPU: use fp32 or bf16")
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
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = info.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
