"""What `clipcls models` lists: open_clip's architectures and tags, the default, and what
is already in the cache."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipcls.engine.local_dirs import used_local_dirs
from clipcls.engine.onnx_folder import MANIFEST
from clipcls.engine.sources import CONFIG_FILE, LOCAL_DIR, WEIGHT_FILES
from clipcls.settings import DEFAULT_PRETRAINED, ModelSettings


@dataclass(frozen=True)
class CatalogEntry:
    """One architecture and pretrained tag open_clip knows."""

    model: str
    pretrained: str
    is_default: bool
    cached: bool
    sigmoid: bool  # trained with a sigmoid loss (SigLIP, SigLIP2): independent label scores
    gone: bool = False  # a local-dir: folder used here once, no longer there


def is_sigmoid(model_cfg: dict[str, Any]) -> bool:
    """Whether a model config is trained with a sigmoid loss: SigLIP-family configs carry
    init_logit_bias, and their probabilities are sigmoid(scale * cos + bias)."""
    return "init_logit_bias" in model_cfg


def _is_cached(cfg: dict[str, Any], cache_dir: Path) -> bool:
    from huggingface_hub import try_to_load_from_cache

    # "org/repo/" means the default file names; "org/repo/file.bin" names one file.
    repo_id, filename = os.path.split(str(cfg.get("hf_hub", "")))
    if not repo_id:
        return False
    names = [filename] if filename else list(WEIGHT_FILES)
    if filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    return any(
        isinstance(try_to_load_from_cache(repo_id, name, cache_dir=str(cache_dir)), str)
        for name in names
    )


def matches(arch: str, tag: str, text_filter: str) -> bool:
    """Whether `clipcls models --filter` text is in the architecture or tag (any case)."""
    return text_filter.casefold() in f"{arch} {tag}".casefold()


def catalog(settings: ModelSettings, text_filter: str = "") -> list[CatalogEntry]:
    """Architectures and tags open_clip knows, marking the default and what is cached."""
    import open_clip

    cache_dir = settings.resolved_cache_dir()
    entries = []
    for arch, tag in open_clip.list_pretrained():
        if not matches(arch, tag, text_filter):
            continue
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        is_default = arch == settings.model and tag == (settings.pretrained or DEFAULT_PRETRAINED)
        cached = _is_cached(cfg, cache_dir)
        sigmoid = is_sigmoid(open_clip.get_model_config(arch) or {})
        entries.append(CatalogEntry(arch, tag, is_default, cached, sigmoid))
    return entries


def _folder_is_sigmoid(folder: str) -> bool:
    try:
        if Path(folder, MANIFEST).is_file():  # an ONNX export: sigmoid models keep a bias
            return json.loads(Path(folder, MANIFEST).read_text("utf-8"))["logit_bias"] is not None
        config = json.loads(Path(folder, CONFIG_FILE).read_text(encoding="utf-8"))
        return is_sigmoid(config.get("model_cfg") or {})
    except (OSError, ValueError, AttributeError, RecursionError, KeyError, TypeError):
        return False


def local_dir_entries(settings: ModelSettings, default: str) -> list[CatalogEntry]:
    """The local-dir: folders models were loaded from here, most recent first (pretrained
    empty; cached while the folder is there, gone once it is not)."""
    mine = os.path.abspath(os.path.expanduser(default.removeprefix(LOCAL_DIR)))
    is_local = default.startswith(LOCAL_DIR)
    return [
        CatalogEntry(
            used.model,
            "",
            is_local and used.path == mine,
            used.present,
            used.present and _folder_is_sigmoid(used.path),
            gone=not used.present,
        )
        for used in used_local_dirs(settings.resolved_cache_dir())
    ]
