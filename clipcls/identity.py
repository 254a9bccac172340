"""Which weights a model setting names, told without importing torch: two spellings of one
model (`local-dir:./m`, `local-dir:/abs/m`, a copy of the folder) give one identity."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from clipcls.errors import UsageError
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


def known_architectures() -> set[str]:
    """open_clip's architecture names, read from its config files without importing torch."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return set()
    folder = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    return {path.stem for path in folder.glob("*.json")}


def check_model_name(settings: ModelSettings) -> None:
    """Catch the common model-name mistakes in milliseconds, before torch is imported."""
    name = settings.model
    if name.startswith(LOCAL_DIR):
        folder = Path(name.removeprefix(LOCAL_DIR)).expanduser()
        if not (folder / CONFIG_FILE).is_file():
            what = "is not a folder" if not folder.is_dir() else f"has no {CONFIG_FILE}"
            raise UsageError(
                f"--model {name}: {folder} {what}; make one with "
                "`clipcls models export ARCH FOLDER` (see `clipcls models`)"
            )
        return
    arch = name.partition(":")[0]
    known = known_architectures()
    if name.startswith(HF_HUB) or not known or arch.replace("/", "-") in known:
        return
    if "/" in arch:  # a transformers id such as openai/clip-vit-base-patch32
        raise UsageError(
            f"--model {name} looks like a Hugging Face transformers id; clipcls runs open_clip "
            f"models: {_transformers_hint(arch)}, or hf-hub:ORG/REPO for an open_clip repo"
        )


TRANSFORMERS = {  # transformers' CLIP ids and the same weights in open_clip
    "openai/clip-vit-base-patch32": "ViT-B-32 with --pretrained openai",
    "openai/clip-vit-base-patch16": "ViT-B-16 with --pretrained openai",
    "openai/clip-vit-large-patch14": "ViT-L-14 with --pretrained openai",
    "openai/clip-vit-large-patch14-336": "ViT-L-14-336 with --pretrained openai",
}


def _transformers_hint(name: str) -> str:
    match = TRANSFORMERS.get(name.lower())
    return f"use --model {match}" if match else "see `clipcls models` for architecture names"


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
