"""`evaluate --shots/--support/--calibrate`: a support set lifts a random model from chance,
the JSON and HTML carry the comparison and the calibration, bad inputs write nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.evaluation.fewshot import draw_support
from clipcls.fewshot.calibration import read_calibration

runner = CliRunner()
CLASSES = ("red", "green", "blue", "stripes", "checks")
SIDE = 64


def picture(kind: str, rng: np.random.Generator) -> Image.Image:
    """A 64x64 image of one visually distinct kind, with seeded Gaussian noise."""
    pixels = np.zeros((SIDE, SIDE, 3), dtype=np.float64)
    if kind in ("red", "green", "blue"):
        pixels[..., ("red", "green", "blue").index(kind)] = 220.0
    elif kind == "stripes":
        pixels[:, (np.arange(SIDE) // 8) % 2 == 0] = 255.0
    else:
        rows, cols = np.indices((SIDE, SIDE)) // 8
        pixels[(rows + cols) % 2 == 0] = 255.0
    noisy = pixels + rng.normal(0.0, 12.0, pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def write_classes(root: Path, per_class: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True)
        for index in range(per_class):
            picture(kind, rng).save(root / kind / f"{kind}{index:02d}.png")
    return root


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    """5 classes of 12 images each."""
    return write_classes(tmp_path / "shapes", 12)


def evaluate(model: str, *args: str, quiet: bool = True):
    return runner.invoke(app, ["evaluate", *args, "--model", model, *(["-q"] if quiet else [])])


def test_four_shots_lift_a_random_model_from_chance(tiny_model: str, shapes: Path) -> None:
    result = evaluate(tiny_model, str(shapes), "--shots", "4", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    few_shot = report["few_shot"]
    assert {"shots": 4, "folds": 5, "seed": 0}.items() <= few_shot.items()
    setups = few_shot["setups"]
    assert set(setups) == {"zero-shot", "support"}
    for setup in setups.values():
        assert set(setup) == {"top1", "balanced_accuracy", "ece"}  # 5 classes: no top-5
        assert set(setup["top1"]) == {"mean", "std", "min", "max", "per_fold"}
        assert len(setup["top1"]["per_fold"]) == 5
    assert setups["support"]["top1"]["mean"] >= 0.9
    assert setups["zero-shot"]["top1"]["mean"] <= 0.5
    assert len(few_shot["alpha"]) == len(few_shot["beta"]) == 5
    assert set(report["calibration"]) == {"ece", "bins"}
    assert 0 <= report["calibration"]["ece"] <= 1
    assert sum(b["count"] for b in report["calibration"]["bins"]) == report["n_images"] == 60


def test_terminal_shows_both_setups_and_the_calibration_error(
    tiny_model: str, shapes: Path
) -> None:
    result = evaluate(tiny_model, str(shapes), "--shots", "4", "--folds", "2", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "4 support images per class drawn" in result.stdout
    assert "2 folds (seed 3)" in result.stdout
    assert "zero-shot" in result.stdout and "support" in result.stdout
    assert "±" in result.stdout
    assert "calibration: ECE" in result.stdout


def test_folds_are_reproducible_and_differ_by_seed(tiny_model: str, shapes: Path) -> None:
    def folds(seed: str) -> list[float]:
        result = evaluate(tiny_model, str(shapes), "--shots", "1", "--seed", seed, "-f", "json")
        # zero-shot's ECE on the images left to score: which ones were drawn shows in it
        return json.loads(result.stdout)["few_shot"]["setups"]["zero-shot"]["ece"]["per_fold"]

    assert folds("1") == folds("1")
    assert folds("1") != folds("2")
    assert len(set(folds("1"))) > 1  # each fold draws its own support set


def test_small_classes_keep_one_image_to_score() -> None:
    targets = np.array([0] * 5 + [1] * 3 + [2])
    rows, notes = draw_support(targets, ("a", "b", "c"), 4, np.random.default_rng(0))
    assert sorted(targets[rows].tolist()) == [0] * 4 + [1] * 2
    assert notes == [
        "class b has only 3 images: 2 used as support",
        "class c has only 1 image: none used as support",
    ]


def test_a_small_class_is_said_once(tiny_model: str, tmp_path: Path) -> None:
    root = write_classes(tmp_path / "shapes", 6)
    for extra in sorted((root / "blue").iterdir())[2:]:
        extra.unlink()
    result = evaluate(tiny_model, str(root), "--shots", "4", "-f", "json")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("class blue has only 2 images: 1 used as support") == 1


def test_a_support_folder_and_a_calibration_file(
    tiny_model: str, shapes: Path, tmp_path: Path
) -> None:
    support = write_classes(tmp_path / "support", 4, seed=9)
    target = tmp_path / "calibration.json"
    page = tmp_path / "report.html"
    result = evaluate(
        tiny_model,
        str(shapes),
        *("--support", str(support), "--calibrate", str(target)),
        *("--target-precision", "0.9", "--format", "json", "--report", str(page)),
        quiet=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    few_shot = report["few_shot"]
    assert few_shot["examples"] == 20 and few_shot["identity"].startswith("support:")
    zero, adapted = few_shot["setups"]["zero-shot"], few_shot["setups"]["support"]
    assert adapted["top1"] >= 0.9 >= zero["top1"]
    assert report["top1"] == adapted["top1"]  # the report describes the classifier with support
    calibration = read_calibration(target)
    assert math.isfinite(calibration.temperature) and calibration.temperature > 0
    assert list(calibration.thresholds) == sorted(CLASSES)
    assert calibration.labels == tuple(sorted(CLASSES))
    assert calibration.support == few_shot["identity"]
    assert calibration.target_precision == 0.9
    assert report["calibration"]["temperature"] == calibration.temperature
    said = f"wrote the calibration to {target}: temperature {calibration.temperature:g}, ECE "
    assert said in result.stderr and "labels reach 0.9 precision" in result.stderr
    text = page.read_text()
    assert "<h2>Few-shot</h2>" in text and 'alt="reliability diagram"' in text


def test_calibration_does_not_change_the_top1(
    tiny_model: str, shapes: Path, tmp_path: Path
) -> None:
    plain = evaluate(tiny_model, str(shapes), "-f", "json")
    fitted = evaluate(
        tiny_model, str(shapes), "-f", "json", "--calibrate", str(tmp_path / "c.json")
    )
    assert json.loads(plain.stdout)["top1"] == json.loads(fitted.stdout)["top1"]


def test_a_support_image_inside_the_dataset_is_not_its_own_neighbour(
    tiny_model: str, shapes: Path
) -> None:
    result = evaluate(tiny_model, str(shapes), "--support", str(shapes), "-f", "json")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("60 support images are also dataset images") == 1
    assert json.loads(result.stdout)["few_shot"]["examples"] == 60


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--shots", "0"], "--shots"),
        (["--shots", "2", "--folds", "0"], "--folds"),
        (["--folds", "3"], "--folds repeats --shots"),
        (["--shots", "2", "--support", "SUPPORT"], "give it or --support"),
        (["--shots", "2", "--calibrate", "CAL"], "use --support DIR with --calibrate"),
        (["--calibrate", "CAL", "--target-precision", "0"], "--target-precision"),
        (["--calibrate", "CAL", "--target-precision", "1.5"], "--target-precision"),
        (["--target-precision", "0.9"], "give --calibrate"),
        (["--support", "WRONG"], "match no label"),
        (["--calibrate", "CAL", "--templates", "photo", "--templates", "simple"], "one model"),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(
    tiny_model: str, shapes: Path, tmp_path: Path, args: list[str], says: str
) -> None:
    wrong = write_classes(tmp_path / "wrong", 1)
    (wrong / "purple").mkdir()
    replace = {
        "SUPPORT": str(write_classes(tmp_path / "support", 2)),
        "WRONG": str(wrong),
        "CAL": str(tmp_path / "out" / "cal.json"),
    }
    (tmp_path / "out").mkdir()
    outputs = tmp_path / "out"
    result = evaluate(
        tiny_model,
        str(shapes),
        *(replace.get(arg, arg) for arg in args),
        *("-o", str(outputs / "r.json"), "--report", str(outputs / "r.html")),
    )
    assert result.exit_code == 2, result.output
    assert says in result.stderr
    if not says.startswith("--shots") and says != "--folds":  # typer's own box for min=1
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert list(outputs.iterdir()) == []
