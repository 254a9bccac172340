"""`clipcls models export ARCH DIR --random [--tiny] [--seed N]`: a model anyone can make
offline, reproducible, and flagged as meaningless wherever it is loaded."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import SAMPLE_IMAGES, jsonl
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.engine.sources import RANDOM_MARKER

runner = CliRunner()
CHELSEA = str(SAMPLE_IMAGES / "chelsea.png")


def run(*args: str):
    return runner.invoke(app, list(args))


def export(folder: Path, *extra: str, arch: str = "ViT-B-32"):
    result = run("models", "export", arch, str(folder), "--random", "--tiny", *extra)
    assert result.exit_code == 0, result.output
    return result


def test_random_tiny_export_is_small_marked_and_loud(tmp_path: Path) -> None:
    result = export(tmp_path / "m")
    assert "RANDOM weights" in result.stderr and "meaningless" in result.stderr
    config = json.loads((tmp_path / "m" / "open_clip_config.json").read_text())
    assert config[RANDOM_MARKER] == {"architecture": "ViT-B-32", "seed": 0, "tiny": True}
    assert config["model_cfg"]["vision_cfg"]["layers"] == 2
    assert (tmp_path / "m" / "open_clip_model.safetensors").stat().st_size < 20_000_000
    assert not list((tmp_path / "m").glob("*.partial"))


def test_seed_makes_the_same_weights_and_another_seed_others(tmp_path: Path) -> None:
    export(tmp_path / "a")
    export(tmp_path / "b", "--seed", "0")
    export(tmp_path / "c", "--seed", "1")
    weights = [(tmp_path / n / "open_clip_model.safetensors").read_bytes() for n in "abc"]
    assert weights[0] == weights[1] != weights[2]


def test_every_load_of_a_random_model_says_so_on_stderr(tmp_path: Path) -> None:
    export(tmp_path / "m")
    args = ("predict", CHELSEA, "--labels", "cat,dog", "-m", f"local-dir:{tmp_path / 'm'}")
    first = run(*args, "-f", "jsonl")
    again = run(*args, "-f", "jsonl")  # every embedding cached: the model is not loaded
    assert "the model was not loaded" in again.stderr
    for result in (first, again):
        assert result.exit_code == 0, result.output
        assert "RANDOM weights" in result.stderr and "meaningless" in result.stderr
        assert "RANDOM" not in result.stdout and len(jsonl(result.stdout)) == 1


def test_a_resnet_shrinks_too(tmp_path: Path) -> None:
    export(tmp_path / "rn", arch="RN50")
    result = run("predict", CHELSEA, "--labels", "cat,dog", "-m", f"local-dir:{tmp_path / 'rn'}")
    assert result.exit_code == 0, result.output


def test_bad_random_exports_are_usage_errors(tmp_path: Path) -> None:
    cases = [
        (("ViT-B-32", "--random", "--pretrained", "openai"), "no weights"),
        (("ViT-B-32", "--tiny"), "--tiny only goes with --random"),
        (("ViT-Nope-1", "--random", "--tiny"), "architecture"),
        (("convnext_base", "--random", "--tiny"), "drop --tiny"),
        (("nllb-clip-base-siglip", "--random", "--tiny"), "drop --tiny"),
    ]
    for args, words in cases:
        folder = tmp_path / "out"
        result = run("models", "export", args[0], str(folder), *args[1:])
        assert result.exit_code == 2, result.output
        assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert not folder.exists()


def test_cached_listing_of_an_empty_cache_is_no_error() -> None:
    result = run("models", "--filter", "ViT-B-32", "--cached")
    assert result.exit_code == 0, result.output
    assert "no models cached yet" in result.stderr
