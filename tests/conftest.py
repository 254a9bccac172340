"""Shared fixtures: tiny random-weight open_clip models as local-dir: folders, and no network."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

# Before anything imports huggingface_hub: tests never reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parent.parent
SAMPLE_IMAGES = REPO / "sample_images"

TINY_MODEL_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_PREPROCESS_CFG = {
    "size": 32,
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def write_tiny_model(folder: Path, seed: int = 0, **overrides: Any) -> Path:
    """Write a random-weight CLIP as open_clip_config.json + open_clip_model.safetensors."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    model_cfg = {**TINY_MODEL_CFG, **overrides}
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": TINY_PREPROCESS_CFG}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(folder / "open_clip_model.safetensors"))
    return folder


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every cache at a temp folder so tests never touch the user's home."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CLIPCLS_CACHE_DIR", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    return cache


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny CLIP with GELU, as a `local-dir:` model name."""
    return f"local-dir:{write_tiny_model(tmp_path_factory.mktemp('tiny'))}"


@pytest.fixture(scope="session")
def tiny_biased_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny CLIP with a SigLIP-style logit bias and QuickGELU."""
    folder = tmp_path_factory.mktemp("tiny_bias")
    return f"local-dir:{write_tiny_model(folder, seed=1, init_logit_bias=-2.5, quick_gelu=True)}"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder with four real photos from sample_images/ (copied, so tests may change it)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png"):
        (folder / name).write_bytes((SAMPLE_IMAGES / name).read_bytes())
    return folder
