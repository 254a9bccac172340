"""Which weights a model setting names, told without importing torch: two spellings of one
model (`local-dir:./m`, `local-dir:/abs/m`, a copy of the folder) give one identity."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from clipcls.settings import ModelSettings

LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"
# open_clip tries the safetensors file first, then the .bin file.
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CONFIG_FILE = "open_clip_config.json"
SAMPLE = 1 << 20  # bytes hashed at each end of a weights file


@dataclass(frozen=True)
class ModelIdentity:
    """A model's weights as one comparable string; None when only loading can tell (a model
    named without its pretrained tag takes open_clip's default for it)."""

    key: str | None


def file_fingerprint(path: str | Path) -> str:
    """Size and a hash of both ends of a file: cheap on a 600 MB checkpoint, and a copy of the
    file gets the same fingerprint."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        digest.update(stream.read(SAMPLE))
        if size > 2 * SAMPLE:
            stream.seek(size - SAMPLE)
            digest.update(stream.read(SAMPLE))
        else:
            digest.update(stream.read())
    return f"{size}:{digest.hexdigest()[:32]}"


def _local_dir(folder: str) -> str | None:
    root = Path(folder).expanduser()
    weights = next((root / name for name in WEIGHT_FILES if (root / name).is_file()), None)
    config = root / CONFIG_FILE
    if weights is None or not config.is_file():
        return None
    return f"{LOCAL_DIR}{file_fingerprint(config)}+{file_fingerprint(weights)}"


def model_identity(settings: ModelSettings) -> ModelIdentity:
    """The identity of the weights the settings name (key None if unknown before loading)."""
    name = settings.model
    try:
        if name.startswith(LOCAL_DIR):
            return ModelIdentity(_local_dir(name.removeprefix(LOCAL_DIR)))
        if name.startswith(HF_HUB):
            return ModelIdentity(name)
        arch, _, tag = name.partition(":")
        arch = arch.replace("/", "-")
        pretrained = tag or settings.pretrained
        if pretrained and os.path.isfile(pretrained):
            return ModelIdentity(f"{arch}+file:{file_fingerprint(pretrained)}")
        return ModelIdentity(f"{arch}:{pretrained}" if pretrained else None)
    except OSError:
        return ModelIdentity(None)  # unreadable: loading reports it properly
