"""What `clipcls doctor` reports: versions, the torch build (and whether it suits this machine),
the device and precision a run would pick and why, the cache folder, the user's config file
and default model, which extras are installed, the server settings."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from clipcls.cache import MAX_ENV
from clipcls.errors import UsageError
from clipcls.settings import CACHE_ENV, ModelSettings
from clipcls.userconfig import CONFIG_ENV, config_path, user_defaults

# extra (pip install 'clipcls[NAME]') -> the module that must import, and its distribution
EXTRAS = {
    "parquet": ("pyarrow", "pyarrow"),
    "s3": ("s3fs", "s3fs"),
    "ray": ("ray", "ray"),
    "serve": ("litserve", "litserve"),
    "report": ("matplotlib", "matplotlib"),
    "heif": ("pillow_heif", "pillow-heif"),
    "onnx": ("onnxruntime", "onnxruntime"),
}
# Environment variables clipcls reads; shown as set or unset, never their values (a key, or a
# URL that may carry one).
ENV_VARS = (
    "CLIPCLS_SERVER",
    "CLIPCLS_API_KEY",
    CACHE_ENV,
    MAX_ENV,
    CONFIG_ENV,
    "CLIPCLS_ONNX_PROVIDERS",
)
CPU_WHEELS = (
    "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu "
    "--force-reinstall"
)
CUDA_PACKAGES = ("nvidia", "triton")  # what a CUDA build of torch brings and a CPU one does not


@dataclass(frozen=True)
class TorchFacts:
    """What decides whether this torch build suits this machine: the CUDA version it was
    built for (None: CPU-only), whether it sees a GPU, whether an NVIDIA driver is loaded,
    and the bytes of the CUDA libraries installed beside it."""

    cuda: str | None
    cuda_available: bool
    driver_present: bool
    cuda_bytes: int


def cuda_build_advice(facts: TorchFacts) -> str | None:
    """Why the CPU-only wheels suit better, when a CUDA build sits where no GPU is used
    (CPU_WHEELS is how to switch); None where the build suits."""
    if facts.cuda is None or facts.cuda_available:
        return None
    why = "no NVIDIA driver is loaded" if not facts.driver_present else "torch sees no GPU"
    size = f" ({facts.cuda_bytes / 1024**3:.1f} GB here)" if facts.cuda_bytes else ""
    return (
        f"a CUDA {facts.cuda} build, but {why}: without a GPU the CPU-only wheels run the "
        f"same and leave out the CUDA libraries{size}"
    )


def cuda_library_bytes() -> int:
    """The size of the nvidia and triton packages installed (0 where there are none)."""
    total = 0
    for name in CUDA_PACKAGES:
        spec = importlib.util.find_spec(name)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            total += folder_bytes(Path(folder))
    return total


@dataclass(frozen=True)
class Extra:
    """One optional feature and the package it needs."""

    name: str
    module: str
    installed: bool
    version: str | None


@dataclass(frozen=True)
class DoctorReport:
    """Everything `clipcls doctor` shows; as_dict() is the --json document (stable keys)."""

    clipcls_version: str
    python_version: str
    open_clip_version: str | None
    torch_version: str | None  # None: torch does not import (torch_error says why)
    torch_cuda: str | None  # None: a CPU-only build of torch
    torch_error: str | None
    device: str
    device_reason: str
    precision: str
    precision_reason: str
    cache_dir: str
    cache_bytes: int
    extras: tuple[Extra, ...]
    env: tuple[tuple[str, bool], ...]  # (name, is set)
    torch_advice: str | None = None  # a CUDA build on a machine without a GPU: why switch
    torch_switch: str | None = None  # and the command that does (CPU_WHEELS)
    config_file: str = ""
    config_error: str | None = None  # the config file or a variable is unusable: why
    defaults: tuple[tuple[str, str, str], ...] = ()  # (setting, value, where it comes from)
    onnx_providers: tuple[str, ...] = ()  # ONNX Runtime's execution providers (none: absent)
    onnx_choice: str = ""  # what --runtime auto runs the default model with, and why

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: extras and env as objects keyed by name."""
        found = asdict(self)
        found["extras"] = {
            e.name: {k: v for k, v in asdict(e).items() if k != "name"} for e in self.extras
        }
        found["env"] = {name: ("set" if is_set else "unset") for name, is_set in self.env}
        found["defaults"] = {key: {"value": v, "source": src} for key, v, src in self.defaults}
        return found


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def folder_bytes(folder: Path) -> int:
    """The size of every file under folder (0 if it does not exist); links are not followed."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # vanished or unreadable: not worth failing a report over
    return total


def installed_extras() -> tuple[Extra, ...]:
    """Which extras' packages are installed (found on the path, not imported: ray takes
    seconds to import)."""
    return tuple(
        Extra(name, module, importlib.util.find_spec(module) is not None, _version(dist))
        for name, (module, dist) in EXTRAS.items()
    )


def doctor_report(settings: ModelSettings | None = None) -> DoctorReport:
    """Gather the report; imports torch to read its build and the device it sees."""
    from clipcls.engine.hardware import RuntimeChoice, gpu_driver_present, runtime_choice
    from clipcls.engine.onnx_sessions import available_providers
    from clipcls.version import __version__

    settings = settings or ModelSettings()
    try:
        runtime = runtime_choice()
        torch_error = None
    except (ImportError, OSError) as error:  # a broken install is what doctor is run for
        torch_error = f"{type(error).__name__}: {error}"
        unknown = "torch does not import"
        runtime = RuntimeChoice(None, None, "cpu", unknown, "fp32", unknown)
    cache_dir = settings.resolved_cache_dir()
    facts = TorchFacts(
        runtime.torch_cuda,
        runtime.device == "cuda",
        gpu_driver_present(),
        cuda_library_bytes() if runtime.torch_cuda and runtime.device != "cuda" else 0,
    )
    config_file, config_error, defaults = _user_defaults()
    return DoctorReport(
        clipcls_version=__version__,
        python_version=platform.python_version(),
        open_clip_version=_version("open_clip_torch"),
        torch_version=runtime.torch_version,
        torch_cuda=runtime.torch_cuda,
        torch_error=torch_error,
        device=runtime.device,
        device_reason=runtime.device_reason,
        precision=runtime.precision,
        precision_reason=runtime.precision_reason,
        cache_dir=str(cache_dir),
        cache_bytes=folder_bytes(cache_dir),
        extras=installed_extras(),
        env=tuple((name, bool(os.environ.get(name))) for name in ENV_VARS),
        torch_advice=(advice := cuda_build_advice(facts)),
        torch_switch=CPU_WHEELS if advice else None,
        config_file=config_file,
        config_error=config_error,
        defaults=defaults,
        onnx_providers=tuple(available_providers()),
        onnx_choice=_onnx_choice(settings),
    )


def _onnx_choice(settings: ModelSettings) -> str:
    """What `--runtime auto` (or the user's default runtime) does with the default model here."""
    from clipcls.engine.runtimes import (
        choose_runtime,
        cpu_fp32_work,
        onnx_installed,
        prepared_export,
    )

    if not onnx_installed():
        return "not installed: every run imports torch (pip install 'clipcls[onnx]')"
    try:
        found = user_defaults()
        chosen = replace(
            settings, model=found.model, precision=found.precision, runtime=found.runtime.value
        )
        runtime = choose_runtime(chosen)
    except UsageError as error:
        return str(error)
    name = chosen.model
    if runtime == "onnx":
        return f"{name} runs on ONNX Runtime (export: {prepared_export(chosen) or name})"
    if prepared_export(chosen) is None:
        return f"{name} runs on torch; `clipcls models prepare {name}` exports it for the CPU"
    if not cpu_fp32_work(chosen):
        return f"{name} runs on torch here (bf16 or a GPU); --runtime onnx uses its export"
    return f"{name} runs on torch (runtime {chosen.runtime}); --runtime onnx uses its export"


def _user_defaults() -> tuple[str, str | None, tuple[tuple[str, str, str], ...]]:
    """The config file, why it cannot be used (None: it can), and each default's value and
    source (none when the file or a variable is unusable)."""
    path, why = config_path()
    try:
        found = user_defaults()
    except UsageError as error:
        return f"{path} ({why})", str(error), ()
    shown = f"{path} ({why}{'' if found.exists else ', not there: built-in defaults'})"
    return shown, None, tuple((s.key, s.value, s.source) for s in found.settings)
