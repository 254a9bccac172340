"""Attacks on --multi-label that once got through: a calibration's thresholds rounded past the
image that set them, a label's carriage return ending the CSV header, two labels sharing one
sorting folder, a support set ignored without a word, and a form's `multi_label=maybe`."""

from __future__ import annotations

import base64
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.evaluation.calibrate import fit_multilabel
from clipcls.evaluation.results import MultiLabelEvaluation
from clipcls.labels import parse_labels
from clipcls.multilabel.metrics import multilabel_metrics
from clipcls.prompts import load_templates
from clipcls.scoring.heads import SIGMOID

runner = CliRunner()


def sigmoid_evaluation(probabilities: np.ndarray, truth: np.ndarray) -> MultiLabelEvaluation:
    """An evaluation as a SigLIP model gives it: tiny sigmoid probabilities (a bias of -10)."""
    names = ",".join(f"l{j}" for j in range(truth.shape[1]))
    return MultiLabelEvaluation(
        model="m",
        pretrained=None,
        identity="m",
        templates=load_templates("photo"),
        labels=parse_labels(names),
        method=SIGMOID,
        source=Path("t.csv"),
        paths=tuple(f"{i}.png" for i in range(len(truth))),
        truth=truth,
        probabilities=probabilities,
        similarities=probabilities,
        metrics=multilabel_metrics(truth, probabilities),
    )


def test_calibrated_thresholds_keep_the_image_that_set_them() -> None:
    # the best F1 takes both positives: its threshold is the lower one's probability, which
    # six decimals round up (3.8e-05) past that very image
    probabilities = np.array([[3.7730888e-05], [8.41e-05], [3.0e-05], [1.2e-07]])
    truth = np.array([[True], [True], [False], [False]])
    fitted = fit_multilabel(sigmoid_evaluation(probabilities, truth))
    cut = fitted.thresholds["l0"]
    assert cut is not None
    assert ((probabilities[:, 0] >= cut) == truth[:, 0]).all()


def test_a_tiny_sigmoid_threshold_does_not_round_to_zero() -> None:
    probabilities = np.array([[4.1e-07], [3.9e-07], [1.0e-08]])
    truth = np.array([[True], [True], [False]])
    cut = fit_multilabel(sigmoid_evaluation(probabilities, truth)).thresholds["l0"]
    assert cut is not None and cut > 1.0e-08  # 0.0 would give every image the label


def test_a_label_with_a_carriage_return_keeps_the_csv_readable(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"
    args = ["label", str(photos), "--model", tiny_model, "--templates", "photo"]
    args += ["--labels", "a\rb,sky", "--multi-label", "-o", str(out), "-q"]
    assert runner.invoke(app, args).exit_code == 0
    with out.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["path", "labels", "prob:a\rb", "prob:sky", "model", "error"]
    assert len(rows) == 5 and all(len(row) == 6 for row in rows)
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output


def test_a_label_with_undecodable_bytes_keeps_the_json_report_valid(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    # the multi-label report once escaped the whole JSON text afterwards: `"x\xffy"`, an
    # invalid JSON escape; its strings are escaped one by one now, as the class folders' are
    truth = tmp_path / "truth.csv"
    truth.write_text(f"path,labels\n{photos / 'chelsea.png'},sky\n")
    args = ["evaluate", "--multi-label", str(truth), "--model", tiny_model, "-f", "json", "-q"]
    result = runner.invoke(app, [*args, "--labels", "sky,x\udcffy"])
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.stdout)["multi_label"]["per_label"]) == ["sky", "x\\xffy"]


@pytest.mark.parametrize("mode", ["copy", "symlink", "hardlink"])
def test_labels_sharing_a_sorting_folder_are_refused(
    tiny_model: str, photos: Path, tmp_path: Path, mode: str
) -> None:
    out, sorted_into = tmp_path / "out.csv", tmp_path / "sorted"
    args = ["label", str(photos), "--model", tiny_model, "--labels", "a/b,a_b,sky"]
    args += ["--multi-label", "--sort-into", str(sorted_into), "--mode", mode, "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "a/b" in result.output and "a_b" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists() and not sorted_into.exists()


@pytest.mark.parametrize("command", ["predict", "label"])
def test_a_support_set_with_multi_label_is_refused(
    tiny_model: str, photos: Path, tmp_path: Path, command: str
) -> None:
    # its cache model is fitted for a softmax: the independent probabilities never used it
    support = tmp_path / "support" / "cat"
    support.mkdir(parents=True)
    (support / "one.png").write_bytes((photos / "chelsea.png").read_bytes())
    out = tmp_path / "out.csv"
    args = [command, str(photos), "--model", tiny_model, "--labels", "cat,sky"]
    args += ["--multi-label", "--support", str(support.parent), "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--support" in result.output and "--multi-label" in result.output
    assert not out.exists()


@pytest.mark.parametrize("value", ["maybe", "", "ture"])
def test_a_form_multi_label_that_is_no_boolean_is_refused(value: str) -> None:
    from clipcls.client.checks import RequestError
    from clipcls.client.protocol import Limits, parse_request
    from clipcls.server.uploads import _form_value

    body = {"images": [{"path": "/x.png"}], "labels": ["a", "b"]}
    body["multi_label"] = _form_value("multi_label", value, Limits())
    with pytest.raises(RequestError, match="multi_label"):
        parse_request(body, Limits(), ["/"])


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("0", False), ("No", False)])
def test_a_form_multi_label_takes_the_usual_words(value: str, expected: bool) -> None:
    from clipcls.client.protocol import Limits
    from clipcls.server.uploads import _form_value

    assert _form_value("multi_label", value, Limits()) is expected


class PlainSupport:
    """serve --support's examples as the worker uses them: none for any request's labels, so
    each scorer is zero-shot."""

    def for_labels(self, labels: object) -> None:
        return None


def test_a_support_server_refuses_a_multi_label_request_alone() -> None:
    from test_server_cache import png, worker

    from clipcls.client.protocol import ERROR_STATUS, Limits, parse_request

    api = worker(None)
    api.support = PlainSupport()
    body = {"images": [{"name": "a.png", "data": base64.b64encode(png((1, 2, 3))).decode()}]}
    asked = parse_request({**body, "labels": ["a", "b"], "multi_label": True}, Limits(), [])
    plain = parse_request({**body, "labels": ["a", "b"]}, Limits(), [])
    answers = api.predict([api.decode_request(r.to_record()) for r in (asked, plain)])
    assert answers[0][ERROR_STATUS] == 400 and "multi_label" in answers[0]["error"]
    assert "predictions" in answers[1]  # the batch's other request is answered


def test_serve_refuses_support_with_multi_label(tiny_model: str, tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    args = ["serve", "--model", tiny_model, "--support", str(tmp_path), "--multi-label"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--support with --multi-label" in result.output


def test_a_labels_csv_naming_a_fifo_says_so(tmp_path: Path) -> None:
    from clipcls.errors import UsageError
    from clipcls.multilabel.truth import read_truth

    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "pipe.png")
    source = tmp_path / "t.csv"
    source.write_text("path,labels\nlink.png,cat\n")
    with pytest.raises(UsageError, match=r"t\.csv:2: .*link\.png is not a regular file"):
        read_truth(source)


def test_a_multi_label_calibration_missing_a_labels_threshold_is_damaged(tmp_path: Path) -> None:
    from clipcls.errors import UsageError
    from clipcls.fewshot.calibration import Calibration, read_calibration

    fitted = {"slopes": [1.0, 2.0], "intercepts": [0.0, 0.0], "thresholds": {"a": 0.5}}
    path = tmp_path / "cal.json"
    Calibration("m", ("a", "b"), "t", 1.0, multi_label=fitted).write(path)
    with pytest.raises(UsageError, match="damaged.*b"):  # b would silently never apply
        read_calibration(path)


@pytest.mark.parametrize("auto", [True, False])
def test_a_multi_label_calibration_in_a_single_label_run_is_refused(
    tiny_model: str, photos: Path, tmp_path: Path, auto: bool
) -> None:
    # its softmax part is empty (temperature 1, no thresholds): auto made every image unknown
    truth = tmp_path / "truth.csv"
    truth.write_text("path,labels\nphotos/chelsea.png,cat\nphotos/rocket.jpg,sky;cat\n")
    fitted, out = tmp_path / "cal.json", tmp_path / "out.csv"
    args = ["evaluate", "--multi-label", str(truth), "--model", tiny_model, "--templates"]
    assert runner.invoke(app, [*args, "photo", "--calibrate", str(fitted), "-q"]).exit_code == 0
    args = ["label", str(photos), "--model", tiny_model, "--templates", "photo", "--labels"]
    args += ["cat,sky", "--calibration", str(fitted), "-o", str(out)]
    result = runner.invoke(app, [*args, *(["--threshold", "auto"] if auto else [])])
    assert result.exit_code == 2, result.output
    assert "--multi-label" in result.output and not out.exists()
