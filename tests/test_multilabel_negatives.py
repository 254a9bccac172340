"""An image that shows none of the labels is a legitimate row of a multi-label truth: an empty
`labels` cell, a negative for every label, counted in AP, mAP and precision / recall / F1
exactly as scikit-learn counts it. A missing file or an unknown label is still refused."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_multilabel_evaluate import LABELS, draw, evaluate

from clipcls.errors import UsageError
from clipcls.multilabel.metrics import multilabel_metrics
from clipcls.multilabel.truth import read_truth

sk = pytest.importorskip("sklearn.metrics")


def quietly(function, *args, **kwargs):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns of a label without positives
        return function(*args, **kwargs)


def test_empty_cells_are_negatives_for_every_label(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        draw(tmp_path / name, True, False, False)
    source = tmp_path / "labels.csv"
    source.write_text('path,labels\na.png,dog\nb.png,\nc.png," ; "\n')
    truth = read_truth(source)
    assert truth.labels == ("dog",) and truth.truth.tolist() == [[True], [False], [False]]
    assert truth.names_of(1) == [] and len(truth.paths) == 3
    given = read_truth(source, ["cat", "dog"])
    assert given.truth.tolist() == [[False, True], [False, False], [False, False]]
    with pytest.raises(UsageError, match="'dog' is not among the given labels"):
        read_truth(source, ["cat"])
    (tmp_path / "c.png").unlink()
    with pytest.raises(UsageError, match=r"labels.csv:4: no such file: .*c\.png"):
        read_truth(source)
    source.write_text("path,labels\na.png,\nb.png,\n")
    with pytest.raises(UsageError, match="gives no image a label: name the label set with"):
        read_truth(source)
    assert not read_truth(source, ["cat"]).truth.any()


@pytest.mark.parametrize("seed", range(40))
def test_metrics_on_a_set_of_mostly_negatives_equal_scikit_learns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, n_labels = int(rng.integers(2, 60)), int(rng.integers(2, 6))
    truth = rng.random((n, n_labels)) < 0.3
    truth[rng.random(n) < 0.6] = False  # most images show none of the labels
    truth[0], truth[1, 0] = False, True  # at least one empty row, one label with a positive
    if seed % 4 == 0:
        truth[:, -1] = False  # a label no image has: AP 0 as sklearn's, P/R/F1 as sklearn's
    scores = np.round(rng.random((n, n_labels)), 2)  # ties too
    found = multilabel_metrics(truth, scores, 0.5)
    for j, label in enumerate(found.per_label):
        assert label.ap == quietly(sk.average_precision_score, truth[:, j], scores[:, j])
        assert label.positives == int(truth[:, j].sum())
    assert found.mean_ap == pytest.approx(
        quietly(sk.average_precision_score, truth, scores, average="macro"), abs=1e-15
    )
    assert found.micro_ap == quietly(sk.average_precision_score, truth, scores, average="micro")
    predicted = scores >= 0.5
    per = sk.precision_recall_fscore_support(truth, predicted, average=None, zero_division=np.nan)
    for j, label in enumerate(found.per_label):
        counts = label.at_threshold
        for mine, theirs in zip((counts.precision, counts.recall, counts.f1), per, strict=False):
            assert (mine is None and np.isnan(theirs[j])) or mine == pytest.approx(theirs[j])
    for average, counts in (("micro", found.micro), ("macro", found.macro)):
        theirs = sk.precision_recall_fscore_support(
            truth, predicted, average=average, zero_division=np.nan
        )
        for mine, value in zip((counts.precision, counts.recall, counts.f1), theirs, strict=False):
            assert (mine is None and np.isnan(value)) or mine == pytest.approx(value)
    empty = [j for j in range(n_labels) if not truth[:, j].any()]
    assert found.without_positives == empty and all(found.per_label[j].ap == 0.0 for j in empty)


def test_evaluate_counts_images_with_no_label(tiny_model: str, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(5)
    lines = ["path,labels"]
    for i in range(12):
        on = rng.random(3) < 0.5 if i % 2 else np.zeros(3, bool)  # half show none of them
        on[i % 3] |= i % 2 == 1
        draw(folder / f"{i}.png", *on)
        lines.append(f"images/{i}.png," + ";".join(n for n, o in zip(LABELS, on, strict=True) if o))
    source = tmp_path / "labels.csv"
    source.write_text("\n".join(lines) + "\n")
    report, scores = tmp_path / "report.json", tmp_path / "scores.csv"
    result = evaluate(
        tiny_model,
        *("--multi-label", str(source), "--format", "json", "-o", str(report)),
        *("--predictions", str(scores), "--labels", ",".join(LABELS)),
    )
    assert result.exit_code == 0, result.output
    found = json.loads(report.read_text())["multi_label"]
    rows = list(csv.DictReader(scores.open()))
    assert len(rows) == 12 and [row["labels"] for row in rows[::2]] == [""] * 6
    truth = np.array([[n in row["labels"].split(";") for n in LABELS] for row in rows])
    probabilities = np.array([[float(row[f"prob:{n}"]) for n in LABELS] for row in rows])
    assert found["map"] == round(sk.average_precision_score(truth, probabilities), 6)
    micro = sk.precision_recall_fscore_support(
        truth, probabilities >= 0.5, average="micro", zero_division=np.nan
    )
    assert found["micro"]["precision"] == round(micro[0], 6)
    assert found["micro"]["f1"] == round(micro[2], 6)
