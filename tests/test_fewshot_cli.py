"""--support, --calibration and --threshold auto on predict and label: a few examples per label
lift a random model from chance to right, and every mismatch is refused before anything is
written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.engine.sources import model_identity
from clipcls.fewshot.calibration import Calibration, templates_identity
from clipcls.fewshot.support import find_support
from clipcls.labels import parse_labels
from clipcls.prompts import load_templates
from clipcls.settings import ModelSettings

runner = CliRunner()
CLASSES = ("red", "green", "blue", "stripes", "checks")
LABELS = ",".join(CLASSES)


def pattern(name: str) -> np.ndarray:
    """A 64x64 RGB picture of the class, before noise."""
    grid = np.indices((64, 64))
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    if name in colours:
        return np.broadcast_to(np.array(colours[name], float), (64, 64, 3)).copy()
    if name == "stripes":
        on = (grid[1] // 8) % 2 == 0
    else:
        on = ((grid[0] // 8) + (grid[1] // 8)) % 2 == 0
    return np.repeat(np.where(on, 235.0, 20.0)[..., None], 3, axis=2)


def write_class_images(folder: Path, name: str, count: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        noisy = np.clip(pattern(name) + rng.normal(0, 12, (64, 64, 3)), 0, 255)
        path = folder / f"{name}_{i}.png"
        Image.fromarray(noisy.astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def shots(tmp_path: Path) -> tuple[Path, Path]:
    """(support folder with 4 examples per class, folder of 8 unseen images per class)."""
    support, unseen = tmp_path / "support", tmp_path / "unseen"
    for index, name in enumerate(CLASSES):
        write_class_images(support / name, name, 4, seed=index)
        write_class_images(unseen, name, 8, seed=100 + index)
    return support, unseen


def label(model: str, *args: str):
    return runner.invoke(
        app, ["label", *args, "--model", model, "--templates", "photo", "--labels", LABELS]
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def accuracy(rows: list[dict[str, str]]) -> float:
    right = [Path(row["path"]).name.split("_")[0] == row["label"] for row in rows]
    return sum(right) / len(right)


def calibration_for(run_model: str, support: Path | None, **changes: object) -> Calibration:
    """A calibration file's content as evaluate --calibrate would fit it for this run."""
    labels = parse_labels(LABELS)
    identity = find_support(support, labels).identity() if support is not None else None
    fields: dict[str, object] = {
        "model": model_identity(ModelSettings(model=run_model)).key or run_model,
        "labels": CLASSES,
        "templates": templates_identity(load_templates("photo")),
        "temperature": 1.0,
        "support": identity,
    }
    return Calibration(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_few_examples_make_a_random_model_right(
    tiny_model: str, shots: tuple[Path, Path], tmp_path: Path
) -> None:
    support, unseen = shots
    zero_shot, few_shot = tmp_path / "zero.csv", tmp_path / "few.csv"
    assert label(tiny_model, str(unseen), "-o", str(zero_shot)).exit_code == 0
    result = label(tiny_model, str(unseen), "-o", str(few_shot), "--support", str(support))
    assert result.exit_code == 0, result.output
    assert accuracy(read_csv(few_shot)) >= 0.9 > accuracy(read_csv(zero_shot))
    assert "support examples" not in result.stderr  # no input is an example
    predicted = runner.invoke(
        app,
        ["predict", str(unseen), "--model", tiny_model, "--templates", "photo"]
        + ["--labels", LABELS, "--support", str(support), "-f", "jsonl"],
    )
    assert predicted.exit_code == 0, predicted.output
    records = [json.loads(line) for line in predicted.stdout.splitlines()]
    by_predict = {Path(r["path"]).name: r["predictions"][0]["label"] for r in records}
    assert by_predict == {Path(r["path"]).name: r["label"] for r in read_csv(few_shot)}


def test_folders_that_match_no_label_are_refused_and_nothing_written(
    tiny_model: str, shots: tuple[Path, Path], tmp_path: Path
) -> None:
    support, unseen = shots
    (support / "purple").mkdir()
    out = tmp_path / "out.csv"
    result = label(tiny_model, str(unseen), "-o", str(out), "--support", str(support))
    assert result.exit_code == 2 and "match no label: purple" in result.stderr
    assert not out.exists() and not Path(f"{out}.clipcls.json").exists()


def test_support_images_among_the_inputs_are_said_and_labeled(
    tiny_model: str, shots: tuple[Path, Path], tmp_path: Path
) -> None:
    support, unseen = shots
    out = tmp_path / "out.csv"
    result = label(tiny_model, str(unseen), str(support), "-o", str(out), "--support", str(support))
    assert result.exit_code == 0, result.output
    assert "20 input images are support examples: each left out of its own neighbours" in (
        result.stderr
    )
    rows = read_csv(out)
    assert len(rows) == 60 and all(row["label"] in CLASSES for row in rows)


def test_an_unreadable_example_is_a_warning_and_a_missing_label_is_said(
    tiny_model: str, shots: tuple[Path, Path], tmp_path: Path
) -> None:
    support, unseen = shots
    (support / "red" / "broken.png").write_bytes(b"not a png")
    for path in (support / "checks").iterdir():
        path.unlink()
    out = tmp_path / "out.csv"
    result = label(tiny_model, str(unseen), "-o", str(out), "--support", str(support))
    assert result.exit_code == 0, result.output
    assert "support image skipped" in result.stderr and "broken.png" in result.stderr
    assert "support folder of checks holds no images" in result.stderr
    assert len(read_csv(out)) == 40


def test_resume_with_another_support_set_is_refused(
    tiny_model: str, shots: tuple[Path, Path], tmp_path: Path
) -> None:
    support, unseen = shots
    out = tmp_path / "out.csv"
    assert label(tiny_model, str(unseen), "-o", str(out), "--support", str(support)).exit_code == 0
    before = out.read_bytes()
    write_class_images(support / "red", "extra", 1, seed=9)
    refused = label(tiny_model, str(unseen), "-o", str(out), "--support", str(support), "--resume")
    assert refused.exit_code == 2 and "--support was" in refused.stderr
    without = label(tiny_model, str(unseen), "-o", str(out), "--resume")
    assert without.exit_code == 2 and "now 'none'" in without.stderr
    assert out.read_bytes() == before


def test_a_calibration_for_another_setup_is_refused(
    tiny_model: str, shots: tuple[Path, Path], tmp_path: Path
) -> None:
    support, unseen = shots
    out, cal = tmp_path / "out.csv", tmp_path / "cal.json"
    calibration_for(tiny_model, None, model="ViT-B-32:openai").write(cal)
    other_model = label(tiny_model, str(unseen), "-o", str(out), "--calibration", str(cal))
    assert other_model.exit_code == 2 and "fitted for model ViT-B-32:openai" in other_model.stderr
    calibration_for(tiny_model, None, labels=("cat", "dog")).write(cal)
    other_labels = label(tiny_model, str(unseen), "-o", str(out), "--calibration", str(cal))
    assert other_labels.exit_code == 2 and "fitted for labels" in other_labels.stderr
    calibration_for(tiny_model, None).write(cal)
    no_support = label(
        tiny_model,
        str(unseen),
        "-o",
        str(out),
        "--calibration",
        str(cal),
        "--support",
        str(support),
    )
    assert no_support.exit_code == 2 and "fitted for support set None" in no_support.stderr
    assert not out.exists()


def test_threshold_auto_needs_a_calibration(tiny_model: str, shots: tuple[Path, Path]) -> None:
    _, unseen = shots
    out = unseen.parent / "out.csv"
    result = label(tiny_model, str(unseen), "-o", str(out), "--threshold", "auto")
    assert result.exit_code == 2 and "--threshold auto needs --calibration" in result.stderr
    bad = label(tiny_model, str(unseen), "-o", str(out), "--threshold", "sometimes")
    assert bad.exit_code == 2 and not out.exists()


def test_threshold_auto_sends_unsure_rows_to_the_unknown_label(
    tiny_model: str, shots: tuple[Path, Path], tmp_path: Path
) -> None:
    support, unseen = shots
    out, cal = tmp_path / "out.csv", tmp_path / "cal.json"
    # red and green: any confidence will do; blue: never sure enough; the others unreachable
    # (a threshold is a probability: null, not 1.01, is the file's "never")
    thresholds = {"red": 0.0, "green": 0.0, "blue": None, "stripes": None, "checks": None}
    calibration_for(tiny_model, support, temperature=0.5, thresholds=thresholds).write(cal)
    args = ["-o", str(out), "--support", str(support), "--calibration", str(cal)]
    result = label(tiny_model, str(unseen), *args, "--threshold", "auto", "--unknown-label", "?")
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert {row["label"] for row in rows if row["best_label"] in ("red", "green")} <= {
        "red",
        "green",
    }
    assert all(row["label"] == "?" for row in rows if row["best_label"] not in ("red", "green"))
    assert sum(row["label"] == "?" for row in rows) >= 20
    setup = json.loads(Path(f"{out}.clipcls.json").read_text())
    assert setup["threshold"] == "auto" and setup["calibration"].startswith("temperature 0.5")
    calibration_for(tiny_model, support, temperature=0.7, thresholds=thresholds).write(cal)
    changed = label(tiny_model, str(unseen), *args, "--threshold", "auto", "--resume")
    assert changed.exit_code == 2 and "--calibration was" in changed.stderr


def test_a_label_with_rich_markup_prints_as_text(tiny_model: str, tmp_path: Path) -> None:
    support, unseen = tmp_path / "support", tmp_path / "unseen"
    write_class_images(support / "red", "red", 2, seed=1)
    (support / "[bold]odd").mkdir()
    write_class_images(unseen, "red", 2, seed=2)
    args = ["label", str(unseen), "-o", str(tmp_path / "out.csv"), "--model", tiny_model]
    result = runner.invoke(app, [*args, "--labels", "red,[bold]odd", "--support", str(support)])
    assert result.exit_code == 0, result.output
    assert "the support folder of [bold]odd holds no images" in result.stderr


def test_saved_embeddings_take_a_support_set_embedded_by_the_model(
    tiny_model: str, shots: tuple[Path, Path], tmp_path: Path
) -> None:
    support, unseen = shots
    saved, out = tmp_path / "saved.jsonl", tmp_path / "out.csv"
    assert label(tiny_model, str(unseen), "-o", str(saved), "--save-embeddings").exit_code == 0
    args = ["--from-embeddings", str(saved), "-o", str(out), "--support", str(support)]
    result = label(tiny_model, *args)
    assert result.exit_code == 0, result.output
    assert accuracy(read_csv(out)) >= 0.9


def test_the_python_api_takes_a_support_folder(
    tiny_model: str, shots: tuple[Path, Path], tmp_path: Path
) -> None:
    from clipcls.backends.base import BackendConfig, open_backend
    from clipcls.labeling.options import LabelOptions
    from clipcls.labeling.predict import predictions
    from clipcls.labeling.run import label_tree

    support, unseen = shots
    backend = open_backend("local", BackendConfig(ModelSettings(model=tiny_model)))
    labels, templates = parse_labels(LABELS), load_templates("photo")
    out = tmp_path / "api.csv"
    done = label_tree(
        [str(unseen)], out, labels, templates, LabelOptions(), backend, support=support
    )
    assert done.summary.processed == 40 and accuracy(read_csv(out)) >= 0.9
    found = list(predictions(backend, [str(unseen)], labels, templates, support=support))
    right = [Path(p.path).name.split("_")[0] == p.top.label for p in found if p.top]
    assert sum(right) >= 36


@pytest.mark.slow  # starts a Ray cluster
def test_on_ray_the_support_set_gives_the_local_labels(
    tiny_model: str, shots: tuple[Path, Path], tmp_path: Path, cluster: str
) -> None:
    support, unseen = shots
    local, on_ray = tmp_path / "local.csv", tmp_path / "ray.csv"
    assert (
        label(tiny_model, str(unseen), "-o", str(local), "--support", str(support)).exit_code == 0
    )
    ray_args = ["--engine", "ray", "--ray-address", cluster, "--support", str(support)]
    result = label(tiny_model, str(unseen), "-o", str(on_ray), *ray_args)
    assert result.exit_code == 0, result.output
    want = {row["path"]: row["label"] for row in read_csv(local)}
    assert {row["path"]: row["label"] for row in read_csv(on_ray)} == want
