"""Multilingual models (an XLM-RoBERTa or NLLB text tower, SigLIP-i18n's tokenizer) run their
text side through transformers, which clipcls does not install: without it, a load is refused
in one line naming the pip command, before any download, offline or not."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES, write_tiny_model
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.engine import model as engine_model
from clipcls.engine.model import ClipModel
from clipcls.engine.sources import CONFIG_FILE
from clipcls.errors import ModelLoadError
from clipcls.settings import ModelSettings

runner = CliRunner()
CHELSEA = str(SAMPLE_IMAGES / "chelsea.png")


@pytest.fixture
def no_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers absent, whether or not this virtualenv has it; and no build may start."""
    monkeypatch.setitem(sys.modules, "transformers", None)

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("open_clip was asked to build (and download) the model")

    monkeypatch.setattr(engine_model, "_build", no_build)


@pytest.mark.parametrize(
    ("model", "says"),
    [
        (
            "xlm-roberta-base-ViT-B-32",
            "its text tower and tokenizer (Hugging Face's xlm-roberta-base)",
        ),
        (
            "nllb-clip-base-siglip",
            "its text tower and tokenizer (Hugging Face's facebook/nllb-200-distilled-600M)",
        ),
        (
            "ViT-B-16-SigLIP-i18n-256",
            "its tokenizer (Hugging Face's timm/ViT-B-16-SigLIP-i18n-256)",
        ),
    ],
)
def test_a_multilingual_model_without_transformers_is_one_line(
    model: str, says: str, no_transformers: None
) -> None:
    result = runner.invoke(app, ["predict", CHELSEA, "--labels", "chat,chien", "-m", model])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        f"error: {model} needs the transformers package for {says}, and it is not installed: "
        "pip install transformers"
    )
    assert "Traceback" not in result.stderr


def test_a_local_folder_with_a_hugging_face_tokenizer_is_checked_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny SigLIP-i18n with its own tokenizer named again (--tiny swaps in CLIP's).
    folder = write_tiny_model(tmp_path / "i18n", arch="ViT-B-16-SigLIP-i18n-256")
    settings = ModelSettings(model=f"local-dir:{folder}", device="cpu", precision="fp32")
    ClipModel(settings)  # as written: CLIP's bundled tokenizer, no transformers needed
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["model_cfg"]["text_cfg"]["hf_tokenizer_name"] = "timm/ViT-B-16-SigLIP-i18n-256"
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ModelLoadError, match="for its tokenizer .* pip install transformers$"):
        ClipModel(settings)


def test_models_without_hugging_face_parts_load_without_transformers(
    tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    result = runner.invoke(app, ["predict", CHELSEA, "--labels", "cat,dog", "-m", tiny_model])
    assert result.exit_code == 0, result.output


def test_random_weights_refuse_a_hugging_face_text_tower_in_one_line(tmp_path: Path) -> None:
    args = ["models", "export", "xlm-roberta-base-ViT-B-32", str(tmp_path / "m"), "--random"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "its text tower is Hugging Face's xlm-roberta-base" in result.stderr
    assert not (tmp_path / "m").exists()
