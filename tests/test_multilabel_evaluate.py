"""`evaluate --multi-label`: metrics equal scikit-learn's, the CSV read strictly, the report,
the per-image probabilities, the page and the calibration file."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import class_folders
from PIL import Image
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.errors import UsageError
from clipcls.fewshot.calibration import read_calibration
from clipcls.multilabel.metrics import (
    best_f1_threshold,
    multilabel_metrics,
    precision_recall_curve,
    precision_threshold,
)
from clipcls.multilabel.truth import read_truth
from clipcls.scoring.heads import BackgroundHead, Head, LogisticHead, SigmoidHead

runner = CliRunner()
sk = pytest.importorskip("sklearn.metrics")
LABELS = ("red", "blue", "green")


def draw(path: Path, red: bool, blue: bool, green: bool) -> None:
    """64x64 grey; a red patch, blue stripes, a green border as asked."""
    pixels = np.full((64, 64, 3), 128, dtype=np.uint8)
    if blue:
        pixels[::8] = (20, 40, 230)
        pixels[1::8] = (20, 40, 230)
    if red:
        pixels[20:44, 20:44] = (230, 20, 20)
    if green:
        pixels[:4], pixels[-4:], pixels[:, :4], pixels[:, -4:] = ((20, 200, 40),) * 4
    Image.fromarray(pixels).save(path)


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """labels.csv beside images/: twelve images, each with one to three of the labels."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    lines = ["path,labels"]
    for i in range(12):
        on = rng.random(3) < 0.5
        on[i % 3] = True  # every image has a label, every label images
        draw(folder / f"{i}.png", *on)
        names = " ; ".join(name for name, o in zip(LABELS, on, strict=True) if o)
        lines.append(f"images/{i}.png,{names}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "labels.csv"


def evaluate(model: str, *args: str):
    return runner.invoke(app, ["evaluate", *args, "--model", model, "-q"])


def quiet_sklearn(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


def test_average_precision_and_curves_equal_scikit_learns_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        n, n_labels = int(rng.integers(1, 40)), int(rng.integers(1, 6))
        truth = rng.random((n, n_labels)) < rng.random()
        truth[:, 0] = False  # a label no image has: AP 0 and a warning, as sklearn
        scores = np.round(rng.random((n, n_labels)), 1)  # many ties
        found = multilabel_metrics(truth, scores, 0.5)
        assert found.without_positives[0] == 0
        for j in range(n_labels):
            expected = quiet_sklearn(sk.precision_recall_curve, truth[:, j], scores[:, j])
            for mine, theirs in zip(
                precision_recall_curve(truth[:, j], scores[:, j]), expected, strict=True
            ):
                assert np.array_equal(mine, theirs)
            ap = quiet_sklearn(sk.average_precision_score, truth[:, j], scores[:, j])
            assert found.per_label[j].ap == ap
        macro = quiet_sklearn(sk.average_precision_score, truth, scores, average="macro")
        micro = quiet_sklearn(sk.average_precision_score, truth, scores, average="micro")
        assert found.mean_ap == pytest.approx(macro, abs=1e-15)
        assert found.micro_ap == micro


def test_counts_at_the_threshold_equal_scikit_learns() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        n, n_labels = int(rng.integers(1, 30)), int(rng.integers(2, 5))  # one: sklearn reads binary
        truth = rng.random((n, n_labels)) < 0.4
        scores = rng.random((n, n_labels))
        thresholds = rng.random(n_labels)
        found = multilabel_metrics(truth, scores, thresholds)
        predicted = scores >= thresholds
        kwargs = {"zero_division": np.nan}
        per = sk.precision_recall_fscore_support(truth, predicted, average=None, **kwargs)
        for j, label in enumerate(found.per_label):
            for mine, theirs in zip(
                (label.at_threshold.precision, label.at_threshold.recall, label.at_threshold.f1),
                (per[0][j], per[1][j], per[2][j]),
                strict=True,
            ):
                assert (mine is None and np.isnan(theirs)) or mine == pytest.approx(theirs)
        for average, counts in (("micro", found.micro), ("macro", found.macro)):
            theirs = sk.precision_recall_fscore_support(truth, predicted, average=average, **kwargs)
            for mine, value in zip(
                (counts.precision, counts.recall, counts.f1), theirs[:3], strict=True
            ):
                assert (mine is None and np.isnan(value)) or mine == pytest.approx(value)


def test_thresholds_for_the_best_f1_and_a_target_precision() -> None:
    truth = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.1])
    # at 0.6: P 3/4, R 1, F1 6/7, the best; at 0.8: P 1, R 2/3, F1 0.8
    assert best_f1_threshold(truth, scores) == 0.6
    assert precision_threshold(truth, scores, 1.0) == 0.8
    assert precision_threshold(truth, scores, 0.75) == 0.6
    assert best_f1_threshold(np.zeros(6, bool), scores) is None
    assert precision_threshold(np.array([0, 0, 0, 0, 0, 1], bool), scores, 0.9) is None


def test_the_csv_reads_relative_and_absolute_paths_in_label_order(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        draw(tmp_path / name, True, False, False)
    source = tmp_path / "labels.csv"
    source.write_text(f'path,labels\na.png," dog ;boat;"\n{tmp_path / "b.png"},boat\n')
    truth = read_truth(source)
    assert truth.labels == ("dog", "boat")
    assert truth.paths == (tmp_path / "a.png", tmp_path / "b.png")
    assert truth.truth.tolist() == [[True, True], [False, True]]
    given = read_truth(source, ["boat", "cat", "dog"])
    assert given.labels == ("boat", "cat", "dog") and given.names_of(0) == ["boat", "dog"]
    with pytest.raises(UsageError, match="'dog' is not among the given labels"):
        read_truth(source, ["boat"])


def test_evaluate_multi_label_reports_sklearns_map_and_writes_every_file(
    tiny_model: str, labelled: Path, tmp_path: Path
) -> None:
    report, scores, page = tmp_path / "report.json", tmp_path / "scores.csv", tmp_path / "page"
    result = evaluate(
        tiny_model,
        *("--multi-label", str(labelled), "--format", "json", "-o", str(report)),
        *("--predictions", str(scores), "--report", f"{page}/", "--threshold", "0.4"),
    )
    assert result.exit_code == 0, result.output
    document = json.loads(report.read_text())
    found = document["multi_label"]
    assert set(found) == {"map", "per_label", "threshold", "micro", "macro", "method"}
    assert found["method"] == "background" and found["threshold"] == 0.4
    assert list(found["per_label"]) == list(LABELS) == document["labels"]
    assert set(found["per_label"]["red"]) == {"ap", "precision", "recall", "f1", "positives"}
    assert set(found["micro"]) == {"ap", "precision", "recall", "f1"}
    rows = list(csv.DictReader(scores.open()))
    assert len(rows) == 12 and rows[0]["path"].endswith("0.png")
    truth = np.array([[name in row["labels"].split(";") for name in LABELS] for row in rows])
    probabilities = np.array([[float(row[f"prob:{name}"]) for name in LABELS] for row in rows])
    assert found["map"] == round(sk.average_precision_score(truth, probabilities), 6)
    assert found["per_label"]["red"]["positives"] == int(truth[:, 0].sum())
    predicted = [
        ";".join(n for n, p in zip(LABELS, row, strict=True) if p >= 0.4) for row in probabilities
    ]
    assert [row["predicted"] for row in rows] == predicted
    text = (page / "index.html").read_text()
    assert 'class="numbers per-label"' in text and "<td>red</td>" in text
    assert 'alt="precision-recall curves" src="data:image/png;base64,' in text


def test_the_terminal_report_names_the_method_and_each_label(
    tiny_model: str, labelled: Path
) -> None:
    result = evaluate(tiny_model, "--multi-label", str(labelled))
    assert result.exit_code == 0, result.output
    for text in ("mAP (macro)", "micro AP", "against a background prompt", "AP", "green"):
        assert text in result.stdout


def keys(document: object) -> set[str]:
    """Every key of a JSON document, at any depth."""
    if isinstance(document, dict):
        return set(document).union(*map(keys, document.values()))
    if isinstance(document, list):
        return set().union(*map(keys, document))
    return set()


def test_the_metrics_each_head_names_are_those_its_report_prints(
    tiny_model: str, tiny_biased_model: str, labelled: Path, tmp_path: Path
) -> None:
    folders = evaluate(tiny_model, str(class_folders(tmp_path / "classes")), "--format", "json")
    ranked = keys(json.loads(folders.stdout))
    assert set(Head().metrics) <= ranked
    for model in (tiny_model, tiny_biased_model):  # the background head, the model's sigmoid
        result = evaluate(model, "--multi-label", str(labelled), "--format", "json")
        found = keys(json.loads(result.stdout))
        for head in (SigmoidHead(), BackgroundHead(), LogisticHead()):
            assert set(head.metrics) <= found


def test_a_sigmoid_model_is_scored_with_its_own_sigmoid(
    tiny_biased_model: str, labelled: Path, tmp_path: Path
) -> None:
    result = evaluate(tiny_biased_model, "--multi-label", str(labelled), "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["multi_label"]["method"] == "sigmoid"


def test_calibrate_writes_a_logistic_and_thresholds_per_label(
    tiny_model: str, labelled: Path, tmp_path: Path
) -> None:
    target = tmp_path / "calibration.json"
    args = ("--multi-label", str(labelled), "--calibrate", str(target), "--format", "json")
    result = evaluate(tiny_model, *args)
    assert result.exit_code == 0, result.output
    written = json.loads(target.read_text())
    assert list(written["multi_label"]) == ["slopes", "intercepts", "thresholds"]
    assert len(written["multi_label"]["slopes"]) == 3 and written["labels"] == list(LABELS)
    assert set(written["multi_label"]["thresholds"]) == set(LABELS)
    calibration = read_calibration(target)
    assert calibration.multi_label == written["multi_label"]
    fitted = json.loads(result.stdout)["calibration"]
    assert fitted["method"] == "logistic"
    assert fitted["log_loss_after"] <= fitted["log_loss_before"]
    written["multi_label"]["slopes"] = [1.0]  # not one per label
    target.write_text(json.dumps(written))
    with pytest.raises(UsageError, match="one finite number per label"):
        read_calibration(target)


def write_csv(folder: Path, text: str) -> Path:
    draw(folder / "a.png", True, False, False)
    draw(folder / "b.png", False, True, False)
    source = folder / "bad.csv"
    source.write_text(text)
    return source


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        ("file,labels\na.png,red\n", (), "needs a header row with columns path,labels"),
        ("a.png,red\n", (), "needs a header row"),
        ("path,labels\na.png,red\nmissing.png,blue\n", (), "bad.csv:3: no such file"),
        ("path,labels\nx.png,red\ny.png,red\n", (), "2 files listed in"),
        ("path,labels\na.png,\nb.png, ; \n", (), "bad.csv gives no image a label"),
        ("path,labels\na.png,\nb.png,cat\n", ("--labels", "red,blue"), "'cat' is not among"),
        ("path,labels\na.png,red\n./a.png,blue\n", (), "is listed again (first on line 2)"),
        ("path,labels\na.png,red;cat\n", ("--labels", "red,blue"), "'cat' is not among"),
        ("path,labels\na.png,red\n", ("--threshold", "1.5"), "less than or equal to 1"),
        ("path,labels\na.png,red\n", ("--threshold", "nan"), "Invalid value for '--threshold'"),
        ("path,labels\na.png,red\n", ("--top-k", "3"), "--top-k does not apply"),
        ("path,labels\na.png,red\n", ("--target-precision", "0.9"), "give --calibrate"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tiny_model: str, tmp_path: Path, text: str, args: tuple[str, ...], message: str
) -> None:
    source = write_csv(tmp_path, text)
    outputs = [tmp_path / name for name in ("r.json", "p.csv", "c.json")]
    result = evaluate(
        tiny_model,
        *("--multi-label", str(source), "-o", str(outputs[0]), "--predictions", str(outputs[1])),
        *("--calibrate", str(outputs[2])) * ("--target-precision" not in args),
        *args,
    )
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert not any(path.exists() for path in outputs)


def test_the_modes_options_stay_apart(tiny_model: str, labelled: Path, tmp_path: Path) -> None:
    folder = evaluate(tiny_model, str(tmp_path), "--multi-label", str(labelled))
    assert folder.exit_code == 2 and "DATASET does not apply" in folder.stderr
    threshold = evaluate(tiny_model, str(tmp_path), "--threshold", "0.3")
    assert threshold.exit_code == 2 and "--threshold is for --multi-label" in threshold.stderr
    neither = evaluate(tiny_model)
    assert neither.exit_code == 2 and "--multi-label LABELS.csv" in neither.stderr
