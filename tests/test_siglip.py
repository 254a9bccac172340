"""SigLIP-family models: a tiny random one loads offline, and its sigmoid and softmax scores are
open_clip's own computation; `clipcls models` marks sigmoid models."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import fp32
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.engine.random_model import SIGLIP_TINY_NOTE
from clipcls.engine.sources import RANDOM_MARKER

runner = CliRunner()


def test_tiny_siglip_keeps_the_family_and_loads_offline(tiny_siglip: str) -> None:
    config = json.loads(
        (Path(tiny_siglip.removeprefix("local-dir:")) / "open_clip_config.json").read_text()
    )
    model_cfg = config["model_cfg"]
    assert model_cfg["init_logit_bias"] == -10
    assert model_cfg["vision_cfg"]["timm_pool"] == "map"
    text = model_cfg["text_cfg"]
    assert text["no_causal_mask"] and text["proj_bias"] and text["pool_type"] == "last"
    assert "hf_tokenizer_name" not in text and text["vocab_size"] == 49408
    model = fp32(tiny_siglip)
    assert model.logit_bias == -10.0
    assert not model._truncate_text  # no causal mask: padding changes the embedding
    assert model.encode_texts(["a cat", "a photo of a dog"]).shape == (2, 64)


def test_tiny_siglip_export_says_what_it_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "siglip"
    args = ("models", "export", "ViT-B-16-SigLIP", str(folder), "--random", "--tiny")
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    assert SIGLIP_TINY_NOTE in result.stderr and "RANDOM weights" in result.stderr
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert config[RANDOM_MARKER]["note"] == SIGLIP_TINY_NOTE
    assert config["preprocess_cfg"]["resize_mode"] == "squash"
    assert (folder / "open_clip_model.safetensors").stat().st_size < 20_000_000
