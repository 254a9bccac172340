"""SigLIP-family models: a tiny random one loads offline, its sigmoid and softmax scores are
open_clip's own computation, and `clipcls models` marks sigmoid models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SAMPLE_IMAGES, fp32, jsonl
from PIL import Image
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.engine.random_model import SIGLIP_TINY_NOTE
from clipcls.engine.sources import RANDOM_MARKER

runner = CliRunner()
LABELS = ["cat", "coffee", "rocket", "astronaut"]
TEMPLATE = "a photo of a {}."
# PNGs: JPEGs may be draft-decoded by clipcls, which open_clip's transform never does.
IMAGES = [SAMPLE_IMAGES / name for name in ("chelsea.png", "coffee.png", "astronaut.png")]


def folder_of(model: str) -> Path:
    return Path(model.removeprefix("local-dir:"))


@pytest.fixture(scope="module")
def reference(tiny_siglip: str) -> dict[str, Any]:
    """open_clip's own logits for IMAGES x LABELS (one template), in fp32, float64 out."""
    import open_clip
    import torch

    model, _, preprocess = open_clip.create_model_and_transforms(tiny_siglip, precision="fp32")
    tokenizer = open_clip.get_tokenizer(tiny_siglip)
    images = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in IMAGES])
    with torch.no_grad():
        image = model.encode_image(images, normalize=True)
        text = model.encode_text(tokenizer([TEMPLATE.replace("{}", x) for x in LABELS]), True)
        logits = model.logit_scale.exp() * image @ text.T + model.logit_bias
    return {
        "cos": (image @ text.T).double().numpy(),
        "logits": logits.double().numpy(),
        "sigmoid": torch.sigmoid(logits).double().numpy(),
        "softmax": torch.softmax(logits, dim=1).double().numpy(),
        "bias": float(model.logit_bias.item()),
    }


def test_tiny_siglip_keeps_the_family_and_loads_offline(tiny_siglip: str) -> None:
    config = json.loads((folder_of(tiny_siglip) / "open_clip_config.json").read_text())
    model_cfg = config["model_cfg"]
    assert model_cfg["init_logit_bias"] == -10
    assert model_cfg["vision_cfg"]["timm_pool"] == "map"
    text = model_cfg["text_cfg"]
    assert text["no_causal_mask"] and text["proj_bias"] and text["pool_type"] == "last"
    assert "hf_tokenizer_name" not in text and text["vocab_size"] == 49408
    model = fp32(tiny_siglip)
    assert model.logit_bias == -10.0
    assert not model._truncate_text  # no causal mask: the padding changes the embedding
    assert model.encode_texts(["a cat", "a photo of a dog"]).shape == (2, 64)


def test_sigmoid_from_clipcls_embeddings_is_open_clips(
    tiny_siglip: str, reference: dict[str, Any]
) -> None:
    model = fp32(tiny_siglip)
    assert model.logit_bias == reference["bias"]
    images = model.encode_prepared([model.prepare(Image.open(p).convert("RGB")) for p in IMAGES])
    texts = model.encode_texts([TEMPLATE.replace("{}", label) for label in LABELS])
    cos = images.astype(np.float64) @ texts.astype(np.float64).T
    logits = model.logit_scale * cos + model.logit_bias
    # The bias (-10) pushes every probability near 0: the logits are compared too, so the
    # check bites on the similarities and not only on the sigmoid's flat tail.
    np.testing.assert_allclose(cos, reference["cos"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(logits, reference["logits"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), reference["sigmoid"], rtol=0, atol=1e-6)


def test_softmax_prediction_with_a_siglip_model_is_open_clips(
    tiny_siglip: str, reference: dict[str, Any], tmp_path: Path
) -> None:
    templates = tmp_path / "one.txt"
    templates.write_text(TEMPLATE + "\n")
    args = ["predict", *map(str, IMAGES), "--labels", ",".join(LABELS), "-m", tiny_siglip]
    options = ["--templates", str(templates), "--precision", "fp32", "-f", "jsonl"]
    result = runner.invoke(app, [*args, *options])
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert [row["path"] for row in rows] == [str(p) for p in IMAGES]
    for row, softmax, cos in zip(rows, reference["softmax"], reference["cos"], strict=True):
        got = {p["label"]: (p["probability"], p["similarity"]) for p in row["predictions"]}
        np.testing.assert_allclose([got[x][0] for x in LABELS], softmax, rtol=0, atol=1e-6)
        np.testing.assert_allclose([got[x][1] for x in LABELS], cos, rtol=0, atol=1e-6)


def test_models_marks_sigmoid_families() -> None:
    listing = runner.invoke(app, ["models", "--filter", "ViT-B-16-SigLIP2"], env={"COLUMNS": "120"})
    assert listing.exit_code == 0, listing.output
    assert "webli (sigmoid)" in listing.stdout
    rows = json.loads(runner.invoke(app, ["models", "--json", "--filter", "ViT-B-16"]).stdout)
    sigmoid = {row["model"] for row in rows if row["sigmoid"]}
    assert "ViT-B-16-SigLIP" in sigmoid and "ViT-B-16-SigLIP2" in sigmoid
    assert not sigmoid & {"ViT-B-16", "ViT-B-16-quickgelu"}
    plain = runner.invoke(app, ["models", "--filter", "ViT-B-32"], env={"COLUMNS": "120"})
    assert "openai (sigmoid)" not in plain.stdout


def test_tiny_siglip_export_says_what_it_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "siglip"
    args = ("models", "export", "ViT-B-16-SigLIP", str(folder), "--random", "--tiny")
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    assert SIGLIP_TINY_NOTE in " ".join(result.stderr.split())
    assert "RANDOM weights" in result.stderr
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert config[RANDOM_MARKER]["note"] == SIGLIP_TINY_NOTE
    assert config["preprocess_cfg"]["resize_mode"] == "squash"
    assert (folder / "open_clip_model.safetensors").stat().st_size < 20_000_000
