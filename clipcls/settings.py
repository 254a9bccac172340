"""Model settings shared by every command: which model, where it runs, where weights and the
cache live, and how large the cache may grow."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from clipcls.errors import UsageError

DEFAULT_MODEL = "ViT-B-32"
# 69.2% ImageNet zero-shot in open_clip's results table, vs 66.6% for laion2b_s34b_b79k.
DEFAULT_PRETRAINED = "datacomp_xl_s13b_b90k"
CACHE_ENV = "CLIPCLS_CACHE_DIR"
MAX_ENV = "CLIPCLS_CACHE_MAX_GB"
DEFAULT_MAX_BYTES = 2 * 1024**3
NOT_YOURS = f"not writable by you: give a folder of your own with --cache-dir or ${CACHE_ENV}"


class Device(str, Enum):
    """Where the model runs; auto picks cuda, then mps, then cpu."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


class BackendName(str, Enum):
    """Which backend a run without --server uses (--engine): this process, or a Ray cluster."""

    LOCAL = "local"
    RAY = "ray"


class Precision(str, Enum):
    """Weight precision; auto: fp16 on CUDA, bf16 on CPUs with AMX/AVX512-BF16, else fp32."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class Runtime(str, Enum):
    """What runs the towers: torch (open_clip), onnx (ONNX Runtime, on an export), or auto:
    onnx where the cache holds an export of the weights and the work is on the CPU."""

    AUTO = "auto"
    TORCH = "torch"
    ONNX = "onnx"


@dataclass(frozen=True)
class ModelSettings:
    """Everything needed to build one model. `pretrained=None` means the model's default tag."""

    model: str = DEFAULT_MODEL
    pretrained: str | None = None
    device: Device = Device.AUTO
    precision: Precision = Precision.AUTO
    cache_dir: Path | None = None
    offline: bool = False
    exact_decode: bool = False  # decode JPEGs at full size instead of libjpeg's draft scaling
    workers: int | None = None  # image decode threads; None picks from the cores
    max_megapixels: float = 200.0  # larger declared image sizes are refused before decoding
    runtime: str = Runtime.AUTO.value  # a Runtime, or a name in engine/factory.py's RUNTIMES

    def __post_init__(self) -> None:
        # Accept plain strings from Python callers ("cuda", "bf16") as the CLI's enums do.
        object.__setattr__(self, "device", Device(self.device))
        object.__setattr__(self, "precision", Precision(self.precision))
        object.__setattr__(self, "runtime", str(getattr(self.runtime, "value", self.runtime)))

    def resolved_cache_dir(self) -> Path:
        """The weights cache: explicit setting, then $CLIPCLS_CACHE_DIR, then the user cache."""
        if self.cache_dir is not None:
            return Path(self.cache_dir).expanduser()
        from_env = os.environ.get(CACHE_ENV)
        if from_env:
            return Path(from_env).expanduser()
        return user_cache_dir() / "clipcls"


def model_id(model: str, pretrained: str | None) -> str:
    """A model as rows and reports record it: `ViT-B-32:datacomp_xl_s13b_b90k`."""
    return f"{model}:{pretrained}" if pretrained else model


def user_cache_dir() -> Path:
    """The platform's per-user cache folder."""
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", home / "AppData" / "Local"))
    if sys.platform == "darwin":
        return home / "Library" / "Caches"
    return Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")


def writable(path: Path) -> bool:
    """Whether this user may write path: the file if it is there, and the folder it is in (or,
    not made yet, would be made in). A cache in another user's folder is not."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


def max_bytes_from_env() -> int:
    """The size bound: $CLIPCLS_CACHE_MAX_GB, else 2 GiB."""
    value = os.environ.get(MAX_ENV)
    if not value:
        return DEFAULT_MAX_BYTES
    try:
        gib = float(value)
    except ValueError:
        gib = math.nan
    if not math.isfinite(gib) or gib < 0:
        raise UsageError(f"${MAX_ENV} must be a number of GiB of 0 or more, not {value!r}")
    return int(gib * 1024**3)
