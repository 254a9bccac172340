"""Where a model comes from: an open_clip architecture and tag, a checkpoint file, hf-hub: or
local-dir:; each source's identity (told without torch) and its failure text."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipcls.digests import file_digest
from clipcls.engine.names import (
    clean_tag,
    close_names,
    known_architectures,
    known_tags,
    registered_in_process,
    transformers_hint,
)
from clipcls.engine.onnx_folder import MANIFEST, folder_identity
from clipcls.errors import ModelLoadError, UsageError
from clipcls.settings import DEFAULT_PRETRAINED, ModelSettings

LOCAL_DIR = "local-dir:"


HF_HUB = "hf-hub:"


# open_clip tries the safetensors file first, then the .bin file.
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


CONFIG_FILE = "open_clip_config.json"


# A key of open_clip_config.json that open_clip ignores: the folder holds random weights.
RANDOM_MARKER = "clipcls_random_weights"


RANDOM_NOTICE = (
    "{name} has RANDOM weights (made by `clipcls models export --random`): "
    "its predictions are meaningless"
)


CACHE_VERSION = "clipcls-1"  # bump when embeddings computed for the same inputs would change


@dataclass(frozen=True)
class ModelSource:
    """Where a model's architecture and weights come from, resolved from the settings."""

    name: str  # what open_clip.create_model takes: an architecture or a schema'd id
    pretrained: str | None  # a tag, a checkpoint file, or None for schema'd models
    quick_gelu: bool = False
    notices: tuple[str, ...] = ()

    @property
    def is_file(self) -> bool:
        return self.pretrained is not None and os.path.isfile(self.pretrained)


@dataclass(frozen=True)
class ModelIdentity:
    """A model's weights as one comparable string; None when only loading can tell (a model
    named without its pretrained tag takes open_clip's default for it)."""

    key: str | None


def _local_dir(folder: str, memo: Path | None) -> str | None:
    """A local-dir: folder's identity: the digest of every file open_clip may read there (the
    config, the weights, tokenizer files), by name; None without a config and weights."""
    root = Path(folder).expanduser()
    if (root / MANIFEST).is_file():  # an ONNX export: its manifest lists its files' digests
        return folder_identity(root)
    weights = next((root / name for name in WEIGHT_FILES if (root / name).is_file()), None)
    if weights is None or not (root / CONFIG_FILE).is_file():
        return None
    files = sorted(
        path
        for path in root.iterdir()
        if path.is_file() and not path.name.startswith(".") and not path.name.endswith(".partial")
    )
    listing = "\n".join(f"{path.name}\t{_readable_digest(path, memo)}" for path in files)
    digest = hashlib.sha256(listing.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{LOCAL_DIR}sha256:{digest}"


def _readable_digest(path: Path, memo: Path | None) -> str:
    """A file's digest; one this process cannot read cannot be loaded either (a stray file
    that is not the weights' business must not stop the model)."""
    if path.name in (CONFIG_FILE, *WEIGHT_FILES):
        return file_digest(path, memo)  # OSError: loading reports it
    try:
        return file_digest(path, memo)
    except OSError:
        return "unreadable"


def check_model_name(settings: ModelSettings) -> None:
    """Catch mistyped model names and pretrained tags in milliseconds, before torch is
    imported (open_clip's names read as data); resolve_source checks again when loading."""
    name = settings.model
    schema = schema_source(name)
    if schema is not None:
        schema.check(name)
        return
    given, _, tag = name.partition(":")
    arch = given.replace("/", "-")
    known = known_architectures()
    if not known:
        return
    if arch not in known and not registered_in_process(arch):
        if "/" in given:  # a transformers id such as openai/clip-vit-base-patch32
            raise UsageError(
                f"--model {name} looks like a Hugging Face transformers id; clipcls runs open_clip "
                f"models: {transformers_hint(given)}, or hf-hub:ORG/REPO for an open_clip repo"
            )
        raise unknown_model(name, arch, known)
    pretrained = tag or settings.pretrained
    tags = (known_tags() or {}).get(arch)
    if pretrained is None or tags is None or os.path.isfile(pretrained):
        return
    if clean_tag(pretrained) not in tags:
        raise unknown_tag(arch, pretrained, tags)


def unknown_model(name: str, arch: str, known: Collection[str]) -> UsageError:
    """The error for an architecture open_clip does not know, with the closest names."""
    close = close_names(arch, known)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `clipcls models`"
    return UsageError(f"unknown model {name!r}{hint}")


def unknown_tag(arch: str, pretrained: str, tags: Sequence[str]) -> UsageError:
    """The error for a pretrained tag (or missing file) the architecture does not have."""
    close = difflib.get_close_matches(pretrained, tags, n=3, cutoff=0.3)
    close = close or [t for t in tags if t.startswith(pretrained.split("_")[0])][:3]
    hint = f"did you mean {', '.join(close)}?" if close else f"tags: {', '.join(tags[:5])}"
    return UsageError(
        f"{arch} has no pretrained tag or file {pretrained!r}; {hint} "
        f"(`clipcls models --filter {arch}` lists all {len(tags)})"
    )


def model_identity(settings: ModelSettings) -> ModelIdentity:
    """The identity of the weights the settings name (key None if unknown before loading):
    files by the digest of their whole content, remembered in the cache folder."""
    name, memo = settings.model, settings.resolved_cache_dir()
    try:
        schema = schema_source(name)
        if schema is not None:
            return ModelIdentity(schema.identity(name, memo))
        arch, _, tag = name.partition(":")
        arch = arch.replace("/", "-")
        pretrained = tag or settings.pretrained
        if pretrained and os.path.isfile(pretrained):
            return ModelIdentity(f"{arch}+file:{file_digest(pretrained, memo)}")
        return ModelIdentity(f"{arch}:{pretrained}" if pretrained else None)
    except OSError:
        return ModelIdentity(None)  # unreadable: loading reports it properly


def weights_identity(source: ModelSource, memo: Path | None) -> str:
    """The identity of a resolved source's weights, as model_identity tells it before loading
    (never None: the tag is known); OSError if its files cannot be read."""
    schema = schema_source(source.name)
    if source.is_file:
        return f"{source.name}+file:{file_digest(source.pretrained or '', memo)}"
    if schema is not None:
        return schema.identity(source.name, memo) or source.name
    return f"{source.name}:{source.pretrained}"


def named_model_id(settings: ModelSettings) -> tuple[str, str | None] | None:
    """(model, pretrained) as loading would resolve them, where the name says it all (a
    schema'd model, ARCH:TAG, or --pretrained given); None where open_clip must pick the
    default tag. Lets a Ray driver name the model without importing open_clip."""
    if schema_source(settings.model) is not None:
        return settings.model, None
    arch, _, tag = settings.model.partition(":")
    pretrained = tag or settings.pretrained
    return (arch.replace("/", "-"), pretrained) if pretrained else None


def _has_schema(name: str) -> bool:
    return schema_source(name) is not None


def resolve_source(settings: ModelSettings) -> ModelSource:
    """Check the model name and pretrained tag or file, and pick the activation they need."""
    import open_clip

    if _has_schema(settings.model):
        if settings.pretrained is not None:
            raise UsageError(
                f"--pretrained cannot be used with {settings.model}: "
                "hf-hub: and local-dir: models bring their own weights"
            )
        return ModelSource(settings.model, None, notices=random_weights_notices(settings.model))
    arch, _, tag = settings.model.partition(":")  # "ViT-B-32:openai" as open_clip lists them
    if tag and settings.pretrained is not None:
        raise UsageError(f"--model {settings.model} already names weights; drop --pretrained")
    arch = arch.replace("/", "-")
    if arch not in open_clip.list_models():
        raise unknown_model(settings.model, arch, open_clip.list_models())
    tags = open_clip.list_pretrained_tags_by_model(arch)
    pretrained = tag or settings.pretrained
    pretrained = pretrained or (DEFAULT_PRETRAINED if DEFAULT_PRETRAINED in tags else None)
    if pretrained is None:
        if not tags:
            raise UsageError(f"open_clip knows no weights for {arch}: give --pretrained FILE")
        pretrained = tags[0]
    if os.path.isfile(pretrained):
        notice = (
            f"weights from file {pretrained}: image preprocessing falls back to "
            f"{arch}'s defaults (mean, std, resize), which may not match how they were trained"
        )
        return ModelSource(arch, pretrained, notices=(notice,))
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        raise unknown_tag(arch, pretrained, tags)
    # Tags trained with QuickGELU must get that activation; a GELU model would load silently wrong.
    return ModelSource(arch, pretrained, quick_gelu=bool(cfg.get("quick_gelu", False)))


def load_failure(source: ModelSource, cache: Path, why: str) -> ModelLoadError:
    """The one line that says why a model could not be loaded, in its source's words."""
    schema = schema_source(source.name)
    if schema is not None:
        return ModelLoadError(schema.failure(source.name, cache, why))
    if source.is_file:
        return ModelLoadError(
            f"cannot load checkpoint {source.pretrained} into {source.name}: {why}"
        )
    return ModelLoadError(_download_failure(f"{source.name} ({source.pretrained})", cache, why))


def _download_failure(what: str, cache: Path, why: str) -> str:
    return (
        f"cannot load weights for {what}: not in the cache at {cache}, and {why}. Ways out: "
        "connect to the network once so they download into the cache; or use --model "
        "local-dir:PATH (see `clipcls models export`); or --pretrained FILE. To try clipcls "
        "out with no network: `clipcls models export ViT-B-32 ./random --random --tiny` "
        "(meaningless predictions)"
    )


def is_local(source: ModelSource) -> bool:
    """Whether the source loads from local files only (no download to fall back on)."""
    schema = schema_source(source.name)
    return source.is_file or (schema is not None and schema.local)


def cache_key(weights: str, precision: str, device: str, stage: Any, extra: Any) -> str:
    """What embeddings depend on: the weights (weights_identity: their bytes, for files),
    precision, device kind, preprocessing (or "text")."""
    parts = [CACHE_VERSION, weights, precision, device.split(":")[0], repr(stage), repr(extra)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class SchemaSource:
    """A model named with a schema, such as `local-dir:PATH` or `hf-hub:ORG/REPO`: everything
    clipcls asks of it besides loading, which open_clip does from the same name. A new kind of
    source is one more entry in SCHEMA_SOURCES."""

    prefix: str
    check: Callable[[str], None]  # a fast check of the name, before torch (UsageError)
    # which weights, for --resume and cache keys (None: unknown); (name, digest memo folder)
    identity: Callable[[str, Path | None], str | None]
    failure: Callable[[str, Path, str], str]  # why loading failed: (name, cache folder, why)
    local: bool  # loads from files here, with no download to fall back on


def _check_local_dir(name: str) -> None:
    folder = Path(name.removeprefix(LOCAL_DIR)).expanduser()
    if not (folder / CONFIG_FILE).is_file() and not (folder / MANIFEST).is_file():
        what = "is not a folder" if not folder.is_dir() else f"has no {CONFIG_FILE}"
        raise UsageError(
            f"--model {name}: {folder} {what}; make one with "
            "`clipcls models export ARCH FOLDER` (see `clipcls models`; `--random` makes one "
            "with no network, for trying things out)"
        )


def random_weights_notices(name: str) -> tuple[str, ...]:
    """The meaningless-predictions notice for a local-dir: model with random weights, if it is
    one (read from its config, without torch)."""
    if not name.startswith(LOCAL_DIR):
        return ()
    folder = Path(name.removeprefix(LOCAL_DIR)).expanduser()
    onnx = (folder / MANIFEST).is_file()
    try:
        found = json.loads((folder / (MANIFEST if onnx else CONFIG_FILE)).read_text("utf-8"))
        marked = bool(found.get("random_weights")) if onnx else RANDOM_MARKER in found
    except (OSError, ValueError, TypeError):
        return ()  # loading says what is wrong with the folder
    return (RANDOM_NOTICE.format(name=name),) if marked else ()


SCHEMA_SOURCES = {
    LOCAL_DIR: SchemaSource(
        LOCAL_DIR,
        check=_check_local_dir,
        identity=lambda name, memo: _local_dir(name.removeprefix(LOCAL_DIR), memo),
        failure=lambda name, cache, why: f"cannot load {name}: {why}",
        local=True,
    ),
    HF_HUB: SchemaSource(
        HF_HUB,
        check=lambda name: None,
        identity=lambda name, memo: name,
        failure=_download_failure,
        local=False,
    ),
}


def schema_source(name: str) -> SchemaSource | None:
    """The schema source a model name starts with, if any."""
    return next((s for prefix, s in SCHEMA_SOURCES.items() if name.startswith(prefix)), None)
