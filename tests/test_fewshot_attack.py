"""Few-shot and calibration under hostile input: damaged or strange calibration files, copied
support folders, --mode move over a support folder, and many folds; each refusal is one line,
exit 2, and nothing written."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from click.testing import Result
from test_fewshot_cli import CLASSES, LABELS, calibration_for, label, write_class_images

from clipcls.errors import UsageError
from clipcls.evaluation.fewshot import FewShotPlan, FewShotResult, chosen_text
from clipcls.fewshot.calibration import read_calibration
from clipcls.fewshot.support import find_support
from clipcls.labels import parse_labels


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    """(support folder with 2 examples per class, a folder of 2 images per class)."""
    support, unseen = tmp_path / "support", tmp_path / "unseen"
    for index, name in enumerate(CLASSES):
        write_class_images(support / name, name, 2, seed=index)
        write_class_images(unseen, name, 2, seed=100 + index)
    return support, unseen


def write_calibration(path: Path, model: str, support: Path, **changes: object) -> Path:
    record = {"format": "clipcls-calibration/1", **calibration_for(model, support).__dict__}
    record["labels"] = list(record["labels"])
    path.write_text(json.dumps({**record, **changes}))
    return path


def refused(result: Result, out: Path, words: str) -> None:
    assert result.exit_code == 2, result.output
    assert words in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    "thresholds",
    [
        {"red": "abc"},
        [0.5, 0.5],
        None,
        "x",
        {"red": [1]},
        {"red": float("nan")},
        {"red": 5.0},
        {"red": -1.0},
        {"horse": 0.5},
    ],
)
def test_damaged_thresholds_are_refused_before_anything_is_written(
    tiny_model: str, small: tuple[Path, Path], tmp_path: Path, thresholds: object
) -> None:
    support, unseen = small
    calibration = write_calibration(tmp_path / "c.json", tiny_model, support, thresholds=thresholds)
    out = tmp_path / "out.csv"
    result = label(tiny_model, str(unseen), "--support", str(support), "--calibration",
                   str(calibration), "--threshold", "auto", "--unknown-label", "unsure",
                   "-o", str(out))  # fmt: skip
    refused(result, out, "damaged calibration file")


@pytest.mark.parametrize("labels", ["red", [1, "red"], None])
def test_damaged_labels_are_refused(tmp_path: Path, labels: object) -> None:
    path = tmp_path / "c.json"
    record = {"format": "clipcls-calibration/1", "model": "m", "templates": "t"}
    path.write_text(json.dumps({**record, "labels": labels, "temperature": 1.0}))
    with pytest.raises(UsageError, match="damaged calibration file"):
        read_calibration(path)


def test_a_calibration_fifo_is_refused_not_waited_on(
    tiny_model: str, small: tuple[Path, Path], tmp_path: Path
) -> None:
    support, unseen = small
    fifo = tmp_path / "c.json"
    os.mkfifo(fifo)
    out = tmp_path / "out.csv"
    timer = threading.Timer(20, lambda: open(fifo, "w").close())  # unblocks a hung reader
    timer.start()
    try:
        result = label(tiny_model, str(unseen), "--support", str(support),
                       "--calibration", str(fifo), "-o", str(out))  # fmt: skip
    finally:
        timer.cancel()
    refused(result, out, "not a regular file")


def test_a_copied_support_folder_keeps_its_calibration(tmp_path: Path) -> None:
    labels = parse_labels(LABELS)
    for index, name in enumerate(CLASSES):
        write_class_images(tmp_path / "support" / name, name, 2, seed=index)
    copy = tmp_path / "elsewhere" / "support"
    shutil.copytree(tmp_path / "support", copy)  # new paths, inodes and times, same images
    for path in copy.rglob("*.png"):
        os.utime(path, (1, 1))
    before = find_support(tmp_path / "support", labels).identity()
    assert find_support(copy, labels).identity() == before
    (copy / "red" / "red_0.png").rename(copy / "blue" / "red_0.png")  # another label's example
    assert find_support(copy, labels).identity() != before


def test_move_refuses_to_carry_the_support_examples_away(
    tiny_model: str, small: tuple[Path, Path], tmp_path: Path
) -> None:
    support, unseen = small
    inside = unseen / "support"
    shutil.copytree(support, inside)
    out = tmp_path / "out.csv"
    result = label(tiny_model, str(unseen), "--support", str(inside), "-o", str(out),
                   "--sort-into", str(tmp_path / "sorted"), "--mode", "move")  # fmt: skip
    refused(result, out, "--mode move")
    assert len(list(inside.rglob("*.png"))) == 2 * len(CLASSES)
    copied = label(tiny_model, str(unseen), "--support", str(inside), "-o", str(out),
                   "--sort-into", str(tmp_path / "sorted"))  # fmt: skip
    assert copied.exit_code == 0, copied.output


def test_many_folds_say_alpha_and_beta_in_a_few_words() -> None:
    plan = FewShotPlan(shots=2, folds=1000)
    result = FewShotResult(plan, {}, (20.0,) * 990 + (3.0,) * 10, (5.5,) * 990 + (2.0,) * 10)
    assert chosen_text(result) == "20/5.5 in 990 folds, 3/2 in 10 folds"
    few = FewShotResult(FewShotPlan(shots=2, folds=3), {}, (3.0, 5.0, 3.0), (20.0,) * 3)
    assert chosen_text(few) == "3/20, 5/20, 3/20"
