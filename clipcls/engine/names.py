"""open_clip's architecture names and pretrained tags, read as data (its model_configs/*.json
and the `_PRETRAINED` table in pretrained.py, parsed with `ast`) so that a mistyped --model or
--pretrained is answered in milliseconds, before torch is imported."""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
import sys
from collections.abc import Collection
from pathlib import Path

PRETRAINED_TABLE = "_PRETRAINED"


def _package_folder() -> Path | None:
    """open_clip's folder, found without running its __init__ (which imports torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def known_architectures() -> frozenset[str]:
    """open_clip's architecture names (its config files); empty if open_clip is not found."""
    folder = _package_folder()
    if folder is None:
        return frozenset()
    return frozenset(path.stem for path in (folder / "model_configs").glob("*.json"))


def registered_in_process(arch: str) -> bool:
    """An architecture added with open_clip.add_model_config in this process (a Python user,
    a test): open_clip is imported already then, so asking it costs nothing."""
    module = sys.modules.get("open_clip")
    return module is not None and arch in module.list_models()


@functools.cache
def known_tags() -> dict[str, tuple[str, ...]] | None:
    """Each architecture's pretrained tags as open_clip lists them; None when pretrained.py
    cannot be read as the data this parser expects (then loading tells)."""
    folder = _package_folder()
    if folder is None:
        return None
    try:
        tree = ast.parse((folder / "pretrained.py").read_text(encoding="utf-8"))
        return _tags_from(tree)
    except (OSError, SyntaxError, ValueError):
        return None


def _tags_from(tree: ast.Module) -> dict[str, tuple[str, ...]]:
    """The table `_PRETRAINED = {"ARCH": _NAME or dict(tag=_pcfg(...)), ...}`, plus the
    `ARCH-quickgelu` entries open_clip derives from tags marked quick_gelu=True."""
    named: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                named[target.id] = node.value
    table = named.get(PRETRAINED_TABLE)
    if not isinstance(table, ast.Dict):
        raise ValueError(f"no {PRETRAINED_TABLE} dict")
    tags: dict[str, tuple[str, ...]] = {}
    quick: dict[str, tuple[str, ...]] = {}
    for key, value in zip(table.keys, table.values, strict=True):
        if not isinstance(key, ast.Constant) or not isinstance(key.value, str):
            raise ValueError("a non-string architecture")
        entries = _tag_entries(named.get(value.id) if isinstance(value, ast.Name) else value)
        tags[key.value] = tuple(entries)
        quick_tags = tuple(tag for tag, is_quick in entries.items() if is_quick)
        if quick_tags:
            quick[key.value + "-quickgelu"] = quick_tags
    return {**tags, **quick}


def _tag_entries(node: ast.expr | None) -> dict[str, bool]:
    """`dict(tag=_pcfg(..., quick_gelu=True), ...)` -> {tag: uses quick_gelu}."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise ValueError("an architecture entry that is not dict(...)")
    if node.func.id != "dict" or node.args:
        raise ValueError("an architecture entry that is not dict(tag=...)")
    entries = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise ValueError("dict(**...) in the table")
        entries[keyword.arg] = any(
            inner.arg == "quick_gelu"
            and isinstance(inner.value, ast.Constant)
            and inner.value.value is True
            for inner in getattr(keyword.value, "keywords", [])
        )
    return entries


def clean_tag(tag: str) -> str:
    """A tag as open_clip looks it up (`_clean_tag`): lower case, `-` as `_`."""
    return tag.lower().replace("-", "_")


def close_names(name: str, known: Collection[str]) -> list[str]:
    """Up to three known names that look like name, best first; case does not count
    (`vit-b-32` -> `ViT-B-32`)."""
    folded = {known_name.casefold(): known_name for known_name in sorted(known)}
    close = difflib.get_close_matches(name.casefold(), list(folded), n=3)
    return [folded[found] for found in close]


TRANSFORMERS = {  # transformers' CLIP ids and the same weights in open_clip
    "openai/clip-vit-base-patch32": "ViT-B-32 with --pretrained openai",
    "openai/clip-vit-base-patch16": "ViT-B-16 with --pretrained openai",
    "openai/clip-vit-large-patch14": "ViT-L-14 with --pretrained openai",
    "openai/clip-vit-large-patch14-336": "ViT-L-14-336 with --pretrained openai",
}


def transformers_hint(name: str) -> str:
    match = TRANSFORMERS.get(name.lower())
    return f"use --model {match}" if match else "see `clipcls models` for architecture names"
