"""Random-weight open_clip models written as `local-dir:` folders: clipcls with no download.

Their predictions are meaningless; they exist to try every command offline, in tests and in
the documentation's examples. The folder's config carries a marker (RANDOM_MARKER) that
open_clip ignores and clipcls reads, so every load of such a model can say so.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from clipcls.engine.catalog import is_sigmoid
from clipcls.engine.sources import CONFIG_FILE, RANDOM_MARKER
from clipcls.errors import UsageError

# A few-MB model of the same family: 2 layers per tower, 64 wide, 32-pixel images.
TINY_VISION = {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8}
TINY_TEXT = {"width": 64, "heads": 2, "layers": 2}
TINY_EMBED_DIM = 32
# SigLIP's vision tower comes from timm by name, so a tiny one is a tiny timm model: timm's own
# test ViT (6 layers, 64 wide, patch 16) accepts any image size, and is made with no download.
TINY_TIMM_VISION = {"image_size": 32, "timm_model_name": "test_vit"}
TINY_TIMM_WIDTH = 64  # test_vit's width: with timm_proj "none" the embedding is the trunk's
CLIP_VOCAB = 49408  # open_clip's default tokenizer, bundled with it
SIGLIP_TINY_NOTE = (
    "tiny SigLIP: timm's test_vit vision tower (map pooling kept) and open_clip's CLIP "
    "tokenizer instead of the model's sentencepiece one (a download); text tower and "
    "logit bias as the architecture has them"
)
# open_clip's defaults for its own towers (what a model without a pretrained tag gets).
PREPROCESS = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}
# What open_clip's SigLIP tags preprocess with (pretrained._slpcfg): mean/std 0.5, squashed.
SIGLIP_PREPROCESS = {
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bicubic",
    "resize_mode": "squash",
}


def architecture_config(arch: str) -> dict[str, Any]:
    """open_clip's model config for an architecture name (a copy), or a UsageError."""
    import open_clip

    config = open_clip.get_model_config(arch.replace("/", "-"))
    if not config:
        raise UsageError(f"--random needs an open_clip architecture; {arch!r} is none of them")
    return copy.deepcopy(dict(config))


def _is_tiny_siglip(config: dict[str, Any]) -> bool:
    """A sigmoid model with a timm vision tower and open_clip's text tower: --tiny can shrink it."""
    vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
    plain = "hf_model_name" not in text and "multimodal_cfg" not in config
    return is_sigmoid(config) and "timm_model_name" in vision and plain


def tiny_siglip_config(config: dict[str, Any]) -> dict[str, Any]:
    """A SigLIP-family config shrunk to test size and made loadable offline (SIGLIP_TINY_NOTE).

    Kept: timm's map pooling, the text tower without causal mask, pooled at the last token with
    a projection bias, init_logit_bias. Replaced: the trunk, and the HF tokenizer by CLIP's.
    """
    tiny = copy.deepcopy(config)
    text = {k: v for k, v in config["text_cfg"].items() if k != "hf_tokenizer_name"}
    tiny["embed_dim"] = TINY_TIMM_WIDTH
    tiny["vision_cfg"] = {**config["vision_cfg"], **TINY_TIMM_VISION}
    tiny["text_cfg"] = {**text, **TINY_TEXT, "vocab_size": CLIP_VOCAB}
    return tiny


def tiny_note(arch: str) -> str | None:
    """What --tiny changes in `arch` beyond its size (SIGLIP_TINY_NOTE), or None."""
    return SIGLIP_TINY_NOTE if _is_tiny_siglip(architecture_config(arch)) else None


def tiny_config(config: dict[str, Any]) -> dict[str, Any]:
    """The same family shrunk to a test-sized model: open_clip's own towers, or SigLIP's."""
    if _is_tiny_siglip(config):
        return tiny_siglip_config(config)
    vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
    foreign = [k for k in ("timm_model_name", "hf_model_name") if k in vision or k in text]
    if foreign or "multimodal_cfg" in config:
        raise UsageError(
            "--tiny shrinks architectures built from open_clip's own towers (ViT-*, RN*) "
            "and SigLIP's; this one uses timm, transformers or a text decoder: drop --tiny"
        )
    tiny = copy.deepcopy(config)
    tiny["embed_dim"] = TINY_EMBED_DIM
    if isinstance(vision.get("layers"), int):
        tiny["vision_cfg"] = {**vision, **TINY_VISION}
    else:  # a ResNet: one block per stage, narrow
        tiny["vision_cfg"] = {**vision, "image_size": 32, "layers": [1, 1, 1, 1], "width": 16}
    tiny["text_cfg"] = {**text, **TINY_TEXT}
    return tiny


def _build(model_cfg: dict[str, Any]) -> Any:
    """Instantiate the model class open_clip's factory would pick for this config."""
    import open_clip
    from open_clip.coca_model import CoCa

    kwargs = {k: v for k, v in model_cfg.items() if k != "custom_text"}
    custom = model_cfg.get("custom_text") or "hf_model_name" in model_cfg.get("text_cfg", {})
    if not custom:
        return open_clip.CLIP(**kwargs)
    return CoCa(**kwargs) if "multimodal_cfg" in model_cfg else open_clip.CustomTextCLIP(**kwargs)


def write_random_model(
    folder: Path, arch: str = "ViT-B-32", seed: int = 0, tiny: bool = False, **overrides: Any
) -> Path:
    """Write a random-weight `arch` (reproducible from seed) as a `local-dir:` folder.

    overrides replace top-level keys of the model config (quick_gelu, init_logit_bias, ...).
    """
    import torch
    from safetensors.torch import save_file

    config = architecture_config(arch)
    model_cfg = {**(tiny_config(config) if tiny else config), **overrides}
    hf_tower = model_cfg["text_cfg"].get("hf_model_name")
    if hf_tower:  # transformers would fetch its config from the hub to build even random weights
        raise UsageError(
            f"--random cannot build {arch}: its text tower is Hugging Face's {hf_tower}, whose "
            "config is a download; random weights are for open_clip's own text towers"
        )
    torch.manual_seed(seed)
    model = _build(model_cfg)
    size = model_cfg["vision_cfg"].get("image_size", 224)
    marker: dict[str, Any] = {"architecture": arch, "seed": seed, "tiny": tiny}
    if tiny and _is_tiny_siglip(config):
        marker["note"] = SIGLIP_TINY_NOTE
    preprocess = SIGLIP_PREPROCESS if is_sigmoid(config) else PREPROCESS
    full = {"model_cfg": model_cfg, "preprocess_cfg": {"size": size, **preprocess}}
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    # Write under temporary names and rename last: a half-written folder never looks complete.
    partial_weights = folder / "open_clip_model.safetensors.partial"
    save_file(weights, str(partial_weights))
    partial_weights.chmod(0o644)
    partial_config = folder / (CONFIG_FILE + ".partial")
    partial_config.write_text(json.dumps({**full, RANDOM_MARKER: marker}, indent=2) + "\n")
    partial_weights.replace(folder / "open_clip_model.safetensors")
    partial_config.replace(folder / CONFIG_FILE)
    return folder
