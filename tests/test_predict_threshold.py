"""`predict --threshold P|auto --unknown-label X` in single-label mode: images under their
threshold (one P, or their label's from a calibration file) get the unknown label, and the
model's answer stays in best_label; the terminal table says both."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from test_fewshot_cli import CLASSES, LABELS, calibration_for, runner, write_class_images

from clipcls.cli import app


def predict(model: str, *args: str):  # type: ignore[no-untyped-def]
    command = ["predict", *args, "--model", model, "--templates", "photo", "--labels", LABELS]
    return runner.invoke(app, [*command, "-k", "1"])


def class_images(folder: Path) -> Path:
    for index, name in enumerate(CLASSES):
        write_class_images(folder, name, 1, seed=index)
    return folder


def rows(output: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(output)))


def test_a_threshold_sends_unsure_images_to_the_unknown_label(
    tiny_model: str, tmp_path: Path
) -> None:
    images = class_images(tmp_path / "images")
    everything = rows(predict(tiny_model, str(images), "-f", "csv").stdout)
    done = predict(tiny_model, str(images), "-f", "csv", "--threshold", "0.999")
    assert done.exit_code == 0, done.output
    unsure = rows(done.stdout)
    assert {row["label"] for row in unsure} == {"unknown"}
    assert [row["best_label"] for row in unsure] == [row["label"] for row in everything]
    named = predict(tiny_model, str(images), "--threshold", "0.999", "--unknown-label", "unsure")
    assert named.exit_code == 0 and "unsure (" in named.stdout


def test_threshold_auto_takes_each_labels_threshold_from_the_calibration(
    tiny_model: str, tmp_path: Path
) -> None:
    images = class_images(tmp_path / "images")
    everything = rows(predict(tiny_model, str(images), "-f", "csv").stdout)
    first = everything[0]["label"]
    cut = {name: 0.0 for name in LABELS.split(",")} | {first: 1.0}  # one label never trusted
    calibration_for(tiny_model, None, thresholds=cut).write(tmp_path / "c.json")
    args = ["-f", "csv", "--calibration", str(tmp_path / "c.json"), "--threshold", "auto"]
    done = predict(tiny_model, str(images), *args)
    assert done.exit_code == 0, done.output
    for row, plain in zip(rows(done.stdout), everything, strict=True):
        assert row["label"] == ("unknown" if plain["label"] == first else plain["label"])
    missing = predict(tiny_model, str(images), "--threshold", "auto")
    assert missing.exit_code == 2 and "needs --calibration" in missing.output
    alone = predict(tiny_model, str(images), "--unknown-label", "x")
    assert alone.exit_code == 2 and "needs --threshold" in alone.output
