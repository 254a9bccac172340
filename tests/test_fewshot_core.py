"""The few-shot core on known numbers: the cache model, leave-one-out, the support folder's
rules, the temperature, per-label thresholds and the calibration error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipcls.errors import UsageError
from clipcls.fewshot.calibration import (
    Calibration,
    class_thresholds,
    fit_temperature,
    read_calibration,
    reliability,
)
from clipcls.fewshot.support import find_support
from clipcls.labels import Label
from clipcls.scoring.adapter import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    SupportSet,
    TipAdapter,
    fit_adapter,
)
from clipcls.scoring.scorer import Scorer
from clipcls.scoring.spec import with_support


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def clusters(n_labels: int, per_label: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tight clusters around random centres: the examples of a label are each other's nearest."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_labels, 32))
    points = np.repeat(centres, per_label, axis=0) + 0.2 * rng.normal(
        size=(n_labels * per_label, 32)
    )
    return unit(points), np.repeat(np.arange(n_labels), per_label)


def test_cache_logits_are_the_affinity_summed_per_label() -> None:
    keys = unit(np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
    adapter = TipAdapter(keys, np.array([0, 1, 1]), 3, alpha=2.0, beta=3.0)
    image = unit(np.array([[0.8, 0.6]]))
    cos = image @ keys.T
    want = 2.0 * np.array(
        [
            np.exp(-3 * (1 - cos[0, 0])),
            np.exp(-3 * (1 - cos[0, 1])) + np.exp(-3 * (1 - cos[0, 2])),
            0.0,
        ]
    )
    assert np.allclose(adapter.logits(image)[0], want, atol=1e-6)
    left_out = adapter.logits(image, exclude=[2])[0]
    assert np.isclose(left_out[1], 2.0 * np.exp(-3 * (1 - cos[0, 1])), atol=1e-6)


def test_leave_one_out_uses_the_examples_when_they_help() -> None:
    keys, targets = clusters(5, 4)
    zero_shot = np.random.default_rng(1).normal(size=(len(keys), 5))  # text side knows nothing
    adapter = fit_adapter(keys, targets, zero_shot, 5)
    assert adapter.chosen_by == "leave-one-out" and adapter.alpha > 0
    scored = zero_shot + adapter.logits(keys, exclude=list(range(len(keys))))
    assert (scored.argmax(axis=1) == targets).mean() >= 0.9


def test_leave_one_out_keeps_zero_shot_when_examples_mislead() -> None:
    keys, targets = clusters(4, 3)
    shuffled = np.random.default_rng(2).permutation(targets)  # examples with wrong labels
    zero_shot = 10.0 * np.eye(4)[shuffled]  # zero-shot right about every example
    adapter = fit_adapter(keys, shuffled, zero_shot, 4)
    assert (np.argmax(zero_shot + adapter.logits(keys, range(len(keys))), 1) == shuffled).all()


def test_a_label_with_one_example_takes_the_documented_defaults() -> None:
    keys, targets = clusters(3, 2)
    adapter = fit_adapter(keys[1:], targets[1:], np.zeros((5, 3)), 3)
    assert (adapter.alpha, adapter.beta, adapter.chosen_by) == (
        DEFAULT_ALPHA,
        DEFAULT_BETA,
        "defaults",
    )


def test_labels_without_examples_keep_their_zero_shot_logits() -> None:
    keys, targets = clusters(2, 3)
    weights = unit(np.random.default_rng(3).normal(size=(3, 32)))
    base = Scorer(tuple(Label.plain(n) for n in "abc"), weights, 10.0)
    support = SupportSet(
        keys, targets, tuple(f"/s/{i}.jpg" for i in range(6)), ("a", "b", "c"), "support:x", {}
    )
    scorer = with_support(base, support)
    images = unit(np.random.default_rng(4).normal(size=(4, 32)))
    logits, _ = scorer.logits(images)
    assert np.allclose(logits[:, 2], 10.0 * images @ weights[2], atol=1e-5)


def picture(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def test_support_folders_must_name_labels(tmp_path: Path) -> None:
    labels = (Label.plain("cat"), Label.plain("dog"), Label.plain("car"))
    picture(tmp_path / "s" / "Cat" / "a.png", (1, 2, 3))
    (tmp_path / "s" / "dog").mkdir()
    files = find_support(tmp_path / "s", labels)
    assert files.targets == (0,) and files.empty == ("dog",) and files.absent == ("car",)
    assert any("dog" in line for line in files.notes()) and any(
        "car" in line for line in files.notes()
    )
    picture(tmp_path / "s" / "[b]bird" / "b.png", (1, 2, 3))
    with pytest.raises(UsageError, match=r"match no label: \[b\]bird"):
        find_support(tmp_path / "s", labels)
    with pytest.raises(UsageError, match="does not exist"):
        find_support(tmp_path / "missing", labels)


def test_support_identity_changes_with_a_file(tmp_path: Path) -> None:
    labels = (Label.plain("cat"),)
    image = picture(tmp_path / "s" / "cat" / "a.png", (1, 2, 3))
    before = find_support(tmp_path / "s", labels).identity()
    assert before == find_support(tmp_path / "s", labels).identity()
    picture(image, (200, 2, 3))
    image.touch()
    assert find_support(tmp_path / "s", labels).identity() != before


def test_temperature_recovers_the_one_that_made_the_labels() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(scale=3.0, size=(4000, 5))
    probabilities = np.exp(logits / 2.5)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    targets = np.array([rng.choice(5, p=p) for p in probabilities])
    assert fit_temperature(logits, targets) == pytest.approx(2.5, rel=0.1)


def test_thresholds_reach_the_target_precision() -> None:
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.2, 0.8]])
    targets = np.array([0, 0, 1, 0, 0])
    found = class_thresholds(probabilities, targets, ["a", "b"], 0.99)
    assert found == {"a": 0.8, "b": None}
    assert class_thresholds(probabilities, targets, ["a", "b"], 0.7)["a"] == 0.6


def test_expected_calibration_error_by_hand() -> None:
    probabilities = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])
    targets = np.array([0, 1, 0, 0])
    found = reliability(probabilities, targets)
    assert found.ece == pytest.approx(0.5 * abs(0.5 - 0.95) + 0.5 * abs(1.0 - 0.55))
    assert [count for *_, count in found.bins] == [2, 2]


def test_calibration_file_round_trip_and_setup_check(tmp_path: Path) -> None:
    made = Calibration(
        "local-dir:x@sha256:ab", ("cat", "dog"), "openai@1", 1.7, {"cat": 0.6, "dog": None}, 0.95
    )
    made.write(tmp_path / "c.json")
    read = read_calibration(tmp_path / "c.json")
    assert read == made
    read.check("local-dir:x@sha256:ab", ["cat", "dog"], "openai@1", None)
    with pytest.raises(UsageError, match="fitted for model"):
        read.check("ViT-B-32:openai", ["cat", "dog"], "openai@1", None)
    with pytest.raises(UsageError, match="fitted for labels"):
        read.check("local-dir:x@sha256:ab", ["cat"], "openai@1", None)
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(UsageError, match="not a clipcls calibration file"):
        read_calibration(tmp_path / "bad.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe")
    with pytest.raises(UsageError, match="cannot read calibration file"):
        read_calibration(tmp_path / "bin.json")


def test_rescore_ranks_embedded_predictions_and_keeps_errors_in_place() -> None:
    from clipcls.prediction import Prediction

    weights = unit(np.eye(3, 32)[:3] + 0.01)
    scorer = Scorer(tuple(Label.plain(n) for n in "abc"), weights, 10.0)
    found = [
        Prediction("x.png", embedding=weights[1]),
        Prediction("bad.png", error="cannot read bad.png"),
        Prediction("y.png", embedding=weights[2]),
    ]
    ranked = scorer.rescore(found)
    assert [p.path for p in ranked] == ["x.png", "bad.png", "y.png"]
    assert ranked[0].top.label == "b" and ranked[2].top.label == "c"
    assert ranked[1].error == "cannot read bad.png" and ranked[0].embedding is not None
