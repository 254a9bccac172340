"""--multi-label on predict and label: each label's own probability in the output (the scorer's,
to the digit), thresholds one for all or per label from a calibration file, files linked into
every label's folder, and each refusal made before anything is written."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from clipcls.backends.base import BackendConfig, open_backend
from clipcls.cli import app
from clipcls.engine.sources import model_identity
from clipcls.errors import UsageError
from clipcls.fewshot.calibration import Calibration, templates_identity
from clipcls.labeling.sorting import SortMode
from clipcls.labels import parse_labels
from clipcls.output.formats import Format
from clipcls.output.rows import Columns, Row
from clipcls.prediction import LabelScore
from clipcls.prompts import load_templates
from clipcls.scoring.heads import sigmoid
from clipcls.scoring.spec import ScoreSpec, build_scorer
from clipcls.settings import ModelSettings

runner = CliRunner()
LABELS = "cat,dog,car"
NAMES = ("cat", "dog", "car")


def run(command: str, model: str, *args: str, labels: str = LABELS) -> Result:
    return runner.invoke(
        app, [command, *args, "--model", model, "--templates", "photo", "--labels", labels]
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def expected(model: str, folder: Path, labels: str = LABELS) -> dict[str, dict[str, float]]:
    """Each file's probabilities as the multi-label scorer computes them, by file name."""
    backend = open_backend("local", BackendConfig(ModelSettings(model=model)))
    spec = ScoreSpec(parse_labels(labels), load_templates("photo"), multi_label=True)
    scorer = build_scorer(spec, backend)
    backend.start()
    embedded = list(backend.embed_images(sorted(folder.iterdir())))
    matrix = np.stack([np.asarray(p.embedding) for p in embedded])
    probabilities, _ = scorer.score(matrix)
    names = [label.name for label in scorer.labels]
    return {
        Path(p.path).name: dict(zip(names, map(float, row), strict=True))
        for p, row in zip(embedded, probabilities, strict=True)
    }


def test_csv_and_jsonl_hold_each_labels_own_probability(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    want = expected(tiny_model, photos)
    out = tmp_path / "out.csv"
    result = run("label", tiny_model, str(photos), "-o", str(out), "--multi-label")
    assert result.exit_code == 0, result.output
    header = out.read_text().splitlines()[0]
    assert header == "path,labels,prob:cat,prob:dog,prob:car,model,error"
    for row in read_csv(out):
        mine = want[Path(row["path"]).name]
        assert [float(row[f"prob:{n}"]) for n in NAMES] == pytest.approx(
            [mine[n] for n in NAMES], abs=1e-6
        )
        applies = sorted((n for n in NAMES if mine[n] >= 0.5), key=lambda n: -mine[n])
        assert row["labels"] == ";".join(applies)
    assert not math.isclose(sum(want["coffee.png"].values()), 1.0)  # independent, no softmax
    # predict's JSONL at a threshold between the probabilities seen
    cut = float(np.median([p for row in want.values() for p in row.values()]))
    found = run(
        "predict", tiny_model, str(photos), "-f", "jsonl", "--multi-label", "--threshold", str(cut)
    )
    assert found.exit_code == 0, found.output
    records = [json.loads(line) for line in found.stdout.splitlines()]
    assert len(records) == 4
    for record in records:
        mine = want[Path(record["path"]).name]
        assert list(record["probabilities"]) == list(NAMES)
        assert record["probabilities"] == pytest.approx(mine, rel=1e-6, abs=1e-7)
        applies = sorted((n for n in NAMES if mine[n] >= cut), key=lambda n: -mine[n])
        assert record["labels"] == applies
        assert "predictions" not in record


def test_a_sigmoid_model_gives_its_own_sigmoid(
    tiny_biased_model: str, photos: Path, tmp_path: Path
) -> None:
    backend = open_backend("local", BackendConfig(ModelSettings(model=tiny_biased_model)))
    base = build_scorer(ScoreSpec(parse_labels(LABELS), load_templates("photo")), backend)
    assert base.logit_bias is not None
    embedded = list(backend.embed_images(sorted(photos.iterdir())))
    matrix = np.stack([np.asarray(p.embedding) for p in embedded])
    want = sigmoid(base.logit_scale * matrix @ base.label_weights.T + base.logit_bias)
    result = run(
        "predict",
        tiny_biased_model,
        str(photos),
        "-f",
        "jsonl",
        "--multi-label",
        "--threshold",
        "0",
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    got = [[r["probabilities"][n] for n in NAMES] for r in records]
    assert np.allclose(got, want, rtol=1e-5, atol=1e-7)
    assert all(len(r["labels"]) == 3 for r in records)  # threshold 0: every label applies


def calibration(model: str, tmp_path: Path, multi_label: object) -> Path:
    """A calibration file as evaluate --multi-label --calibrate writes it, labels in another
    order than the run's."""
    fitted = Calibration(
        model=model_identity(ModelSettings(model=model)).key or model,
        labels=("car", "cat", "dog"),
        templates=templates_identity(load_templates("photo")),
        temperature=2.0,
        multi_label=multi_label,  # type: ignore[arg-type]
    )
    path = tmp_path / "cal.json"
    fitted.write(path)
    return path


def test_threshold_auto_takes_each_labels_threshold_and_logistic(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    # slopes 0: every image gets sigmoid(intercept); car 0.269 >= 0.2, cat 0.731 >= 0.7, dog
    # never (null)
    logistic = {
        "slopes": [0.0, 0.0, 0.0],
        "intercepts": [-1.0, 1.0, 2.0],
        "thresholds": {"car": 0.2, "cat": 0.7, "dog": None},
    }
    cal = calibration(tiny_model, tmp_path, logistic)
    out = tmp_path / "out.csv"
    args = ["-o", str(out), "--multi-label", "--calibration", str(cal), "--threshold", "auto"]
    result = run("label", tiny_model, str(photos), *args)
    assert result.exit_code == 0, result.output
    for row in read_csv(out):
        assert row["labels"] == "cat;car"
        assert float(row["prob:cat"]) == pytest.approx(sigmoid(np.array(1.0)), abs=1e-6)
        assert float(row["prob:dog"]) == pytest.approx(sigmoid(np.array(2.0)), abs=1e-6)
        assert float(row["prob:car"]) == pytest.approx(sigmoid(np.array(-1.0)), abs=1e-6)
    found = run(
        "predict", tiny_model, str(photos), "-f", "jsonl", "--multi-label",
        "--calibration", str(cal), "--threshold", "auto",
    )  # fmt: skip
    assert found.exit_code == 0, found.output
    assert {tuple(json.loads(line)["labels"]) for line in found.stdout.splitlines()} == {
        ("cat", "car")
    }
    # a calibration without multi-label thresholds cannot answer auto
    (tmp_path / "plain").mkdir()
    plain = calibration(tiny_model, tmp_path / "plain", None)
    refused = run("label", tiny_model, str(photos), "-o", str(tmp_path / "x.csv"), "--multi-label",
                  "--calibration", str(plain), "--threshold", "auto")  # fmt: skip
    assert refused.exit_code == 2 and "multi-label thresholds" in refused.stderr
    assert not (tmp_path / "x.csv").exists()


def test_sort_into_links_a_file_into_each_of_its_labels_folders(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    (photos / "coffee.png").rename(photos / "cof;fee.png")
    out, folder = tmp_path / "out.csv", tmp_path / "sorted"
    args = ["-o", str(out), "--multi-label", "--threshold", "0", "--sort-into", str(folder)]
    result = run("label", tiny_model, str(photos), *args, "--mode", "symlink")
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert len(rows) == 4
    for row in rows:
        places = row["destination"].split(";")
        assert len(places) == 3
        assert {Path(p).parent.name for p in places} == set(NAMES)
        for place in places:
            assert os.path.islink(place)
            assert os.path.realpath(place) == os.path.realpath(row["path"])
    assert sorted(p.name for p in (folder / "dog").iterdir()) == sorted(
        ["astronaut.png", "chelsea.png", "cof_fee.png", "rocket.jpg"]
    )
    # resumed: nothing left, nothing placed twice
    again = run("label", tiny_model, str(photos), *args, "--mode", "symlink", "--resume")
    assert again.exit_code == 0, again.output
    assert len(list((folder / "cat").iterdir())) == 4


def test_refusals_come_before_anything_is_written(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    out, folder = tmp_path / "out.csv", tmp_path / "sorted"
    cases = [
        (["--sort-into", str(folder), "--mode", "move"], "one file cannot move into several"),
        (["--threshold", "1.5"], "0<=x<=1"),
        (["--top-k", "2"], "--top-k has no meaning with --multi-label"),
        (["--unknown-label", "a;b"], "holds ';'"),
    ]
    for extra, said in cases:
        result = run("label", tiny_model, str(photos), "-o", str(out), "--multi-label", *extra)
        assert result.exit_code == 2, (extra, result.output)
        assert said in result.stderr, (extra, result.stderr)
        assert not out.exists() and not folder.exists()
    semicolon = run("label", tiny_model, str(photos), "-o", str(out), "--multi-label",
                    labels="cat,a;b")  # fmt: skip
    assert semicolon.exit_code == 2 and "holds ';'" in semicolon.stderr and not out.exists()
    # predict takes a threshold in single-label mode too (tests/test_predict_threshold.py); a
    # multi-label calibration there is refused
    predicted = run("predict", tiny_model, str(photos), "--threshold", "1.5")
    assert predicted.exit_code == 2
    topk = run("predict", tiny_model, str(photos), "--multi-label", "-k", "2")
    assert topk.exit_code == 2 and "no meaning" in topk.stderr


def test_resume_refuses_a_change_of_multi_label(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"
    assert run("label", tiny_model, str(photos), "-o", str(out)).exit_code == 0
    before = out.read_bytes()
    result = run("label", tiny_model, str(photos), "-o", str(out), "--multi-label", "--resume")
    assert result.exit_code == 2 and "--multi-label was 'False', now 'True'" in result.stderr
    assert out.read_bytes() == before
    multi = tmp_path / "multi.jsonl"
    first = run("label", tiny_model, str(photos), "-o", str(multi), "--multi-label")
    assert first.exit_code == 0, first.output
    back = run("label", tiny_model, str(photos), "-o", str(multi), "--resume")
    assert back.exit_code == 2 and "--multi-label was 'True', now 'False'" in back.stderr
    same = run("label", tiny_model, str(photos), "-o", str(multi), "--multi-label", "--resume")
    assert same.exit_code == 0 and "nothing left to label" in same.stderr


def test_odd_label_names_are_escaped_like_other_cells(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"
    labels = "=cmd(),[/b],dog"
    result = run(
        "label", tiny_model, str(photos), "-o", str(out), "--multi-label", "--threshold", "0",
        labels=labels,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "path,labels,prob:=cmd(),prob:[/b],prob:dog,model,error"
    for line in lines[1:]:
        cells = next(csv.reader([line]))
        shown = cells[1][1:] if cells[1].startswith("=cmd()", 1) else cells[1]
        assert not cells[1].startswith("=")  # a formula's first character is escaped
        assert set(shown.split(";")) == {"=cmd()", "[/b]", "dog"}
        assert all(0.0 <= float(cell) <= 1.0 for cell in cells[2:5])  # numbers, not escaped
    from clipcls.review.records import read_records

    with pytest.raises(UsageError, match="multi-label output"):
        read_records(out)
    # the writer itself, on a row whose first label starts a formula
    stream = io.StringIO()
    columns = Columns(1, model=True, multi_label=("=cmd()", "[/b]"))
    scores = (LabelScore("=cmd()", 0.9, 0.1), LabelScore("[/b]", 0.7, 0.1))
    row = Row("a.png", "=cmd();[/b]", scores, labels=("=cmd()", "[/b]"), model="m")
    Format.CSV.writer(stream, columns).write(row)
    assert stream.getvalue().splitlines()[1] == "a.png,'=cmd();[/b],0.900000,0.700000,m,"
    assert columns.record(row) == {
        "path": "a.png",
        "labels": ["=cmd()", "[/b]"],
        "probabilities": {"=cmd()": 0.9, "[/b]": 0.7},
        "model": "m",
    }


def test_parquet_holds_the_probabilities_as_numbers(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "out.parquet"
    result = run("label", tiny_model, str(photos), "-o", str(out), "--multi-label")
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.column_names == ["path", "labels", "prob:cat", "prob:dog", "prob:car", "model",
                                  "error"]  # fmt: skip
    assert str(table.schema.field("prob:cat").type) == "double"


def test_the_python_api_takes_multi_label(tiny_model: str, photos: Path, tmp_path: Path) -> None:
    from clipcls.labeling.options import LabelOptions
    from clipcls.labeling.predict import predictions
    from clipcls.labeling.run import label_tree

    want = expected(tiny_model, photos)
    backend = open_backend("local", BackendConfig(ModelSettings(model=tiny_model)))
    labels, templates = parse_labels(LABELS), load_templates("photo")
    found = list(predictions(backend, [str(photos)], labels, templates, multi_label=True))
    for prediction in found:
        got = {s.label: s.probability for s in prediction.scores}
        assert got == pytest.approx(want[Path(prediction.path).name], rel=1e-6)
    out = tmp_path / "api.jsonl"
    options = LabelOptions(multi_label=True, threshold=0.0)
    done = label_tree([str(photos)], out, labels, templates, options, backend)
    assert done.summary.processed == 4 and done.summary.per_label["dog"] == 4
    moving = LabelOptions(multi_label=True, sort_into=tmp_path / "s", mode=SortMode.MOVE)
    with pytest.raises(UsageError, match="several folders"):
        label_tree([str(photos)], tmp_path / "m.csv", labels, templates, moving, backend)
    assert not (tmp_path / "m.csv").exists()


@pytest.mark.slow  # starts a clipcls server
def test_a_server_client_scores_multi_label_on_its_side(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    """The server answers embeddings; the client's head gives the same probabilities."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    pytest.importorskip("litserve")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "clipcls", "serve", "--model", tiny_model]
    server = subprocess.Popen([*command, "--port", str(port)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None and time.monotonic() < deadline
            try:
                urllib.request.urlopen(f"{url}/v1/info", timeout=5).close()
                break
            except OSError:
                time.sleep(0.2)
        local, remote = tmp_path / "local.csv", tmp_path / "remote.csv"
        args = ["--multi-label", "--threshold", "0.3"]
        assert run("label", tiny_model, str(photos), "-o", str(local), *args).exit_code == 0
        result = runner.invoke(
            app,
            ["label", str(photos), "-o", str(remote), *args, "--server", url]
            + ["--templates", "photo", "--labels", LABELS],
        )
        assert result.exit_code == 0, result.output
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    mine = {row["path"]: row for row in read_csv(local)}
    for row in read_csv(remote):
        assert row["labels"] == mine[row["path"]]["labels"]
        for name in NAMES:
            assert float(row[f"prob:{name}"]) == pytest.approx(
                float(mine[row["path"]][f"prob:{name}"]), abs=2e-3
            )
