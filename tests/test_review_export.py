"""review --export keeps the model's answer (`model_label`, `model_probability`) beside the
corrected `label`, with `probability`/`similarity` describing the corrected label: how often
the model was wrong is counted from the export alone, in CSV and JSONL, from either kind."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.output.csv_text import from_cell
from clipcls.output.rows import Columns, Row
from clipcls.output.writers import CsvWriter, JsonlWriter
from clipcls.prediction import LabelScore
from clipcls.review.export import export_corrected
from clipcls.review.log import Decision, ReviewLog
from clipcls.review.table import ReviewTable, load_review

HOSTILE = "=cmd()|[/b]\r\nzebra"  # a label added during review: a formula, markup, CR/LF


def row(path: str, *pairs: tuple[str, float, float], label: str | None = None) -> Row:
    scores = tuple(LabelScore(name, p, s) for name, p, s in pairs)
    return Row(path, label if label is not None else pairs[0][0], scores, model="m")


ROWS = [
    row("a.png", ("cat", 0.6, 0.31), ("dog", 0.3, 0.22)),  # set to dog: the run's 2nd
    row("b.png", ("cat", 0.5, 0.30), ("dog", 0.4, 0.21)),  # accepted: unchanged
    row("c.png", ("dog", 0.7, 0.33), ("bird", 0.2, 0.12)),  # not reviewed
    row(
        "d.png", ("dog", 0.5, 0.28), ("cat", 0.4, 0.26)
    ),  # set to bird: a run label outside its top-2
    row("e.png", ("cat", 0.8, 0.35), ("dog", 0.1, 0.10)),  # a label added during review
    row("f.png", ("dog", 0.35, 0.2), ("cat", 0.3, 0.19), label="unknown"),  # below a threshold
    Row("g.png", error="cannot identify image"),
]
COLUMNS = Columns(top_k=2, best_label=True, model=True)


@pytest.fixture(params=["out.csv", "out.jsonl"])
def reviewed(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ReviewTable, dict[int, Any]]:
    output = tmp_path / request.param
    with output.open("w", encoding="utf-8", newline="") as stream:
        writer = (CsvWriter if output.suffix == ".csv" else JsonlWriter)(stream, COLUMNS)
        for each in ROWS:
            writer.write(each)
    table = load_review(output)
    with ReviewLog.open(table) as log:
        log.decide(0, "dog", "set")
        log.decide(1, "", "accept")
        log.decide(3, "bird", "set")
        log.decide(5, "dog", "set")
        decisions = dict(log.current())
    # The page may add a label the run did not have; export must not assume the run's labels.
    decisions[4] = Decision(4, table.rows[4].path, HOSTILE, "cat", "set", seq=99)
    return table, decisions


def exported_csv(table: ReviewTable, decisions: dict[int, Any], target: Path) -> list[dict]:  # type: ignore[type-arg]
    assert export_corrected(table, decisions, target) == len(ROWS)
    with target.open(newline="", encoding="utf-8") as stream:
        return [{k: from_cell(v) for k, v in r.items()} for r in csv.DictReader(stream)]


def test_a_csv_export_keeps_the_models_answer_beside_the_corrected_label(
    reviewed: tuple[ReviewTable, dict[int, Any]], tmp_path: Path
) -> None:
    table, decisions = reviewed
    rows = exported_csv(table, decisions, tmp_path / "corrected.csv")
    assert list(rows[0])[:6] == [
        *("path", "label", "model_label", "model_probability", "probability", "similarity")
    ]
    assert list(rows[0])[-2:] == ["reviewed", "error"]
    shown = [
        [r["label"], r["model_label"], r["model_probability"], r["probability"], r["similarity"]]
        for r in rows
    ]
    assert shown == [
        ["dog", "cat", "0.600000", "0.300000", ""],  # the run's 2nd: its probability (CSV keeps
        ["cat", "cat", "0.500000", "0.500000", "0.300000"],  # only the top's similarity)
        ["dog", "dog", "0.700000", "0.700000", "0.330000"],
        ["bird", "dog", "0.500000", "", ""],  # not in the row's top-2: unknown, not the old one
        [HOSTILE, "cat", "0.800000", "", ""],
        ["dog", "unknown", "0.350000", "0.350000", "0.200000"],  # the run's best_label
        ["", "", "", "", ""],
    ]
    assert [r["reviewed"] for r in rows] == [
        "true",
        "true",
        "false",
        "true",
        "true",
        "true",
        "false",
    ]
    assert "'=cmd()" in (tmp_path / "corrected.csv").read_text(encoding="utf-8")  # escaped
    assert rows[2]["label_2"] == "bird" and rows[5]["best_label"] == "dog"  # the run's columns
    assert rows[6]["error"] == "cannot identify image"
    # How often the model was wrong, from the export alone: 4 of the 5 reviewed rows.
    checked = [r for r in rows if r["reviewed"] == "true"]
    assert sum(r["label"] != r["model_label"] for r in checked) == 4 and len(checked) == 5


def test_a_jsonl_export_keeps_the_models_answer_too(
    reviewed: tuple[ReviewTable, dict[int, Any]], tmp_path: Path
) -> None:
    table, decisions = reviewed
    target = tmp_path / "corrected.jsonl"
    export_corrected(table, decisions, target)
    records = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [list(r)[:4] for r in records[:6]] == [
        ["path", "label", "model_label", "model_probability"]
    ] * 6
    answers = [(r.get("label"), r["model_label"], r["model_probability"]) for r in records]
    assert answers[:6] == [
        ("dog", "cat", 0.6),
        ("cat", "cat", 0.5),
        ("dog", "dog", 0.7),
        ("bird", "dog", 0.5),
        (HOSTILE, "cat", 0.8),
        ("dog", "unknown", 0.35),
    ]
    assert records[6]["model_label"] is None and records[6]["model_probability"] is None
    if table.output.suffix == ".csv":  # the CSV's columns as JSON: numbers stay numbers
        assert records[0]["probability"] == 0.3 and records[3]["probability"] is None
    else:  # the run's own predictions, untouched
        assert records[3]["predictions"][0] == {
            "label": "dog",
            "probability": 0.5,
            "similarity": 0.28,
        }
    wrong = sum(r["reviewed"] and r.get("label") != r["model_label"] for r in records)
    assert wrong == 4


def test_the_cli_export_of_an_unreviewed_output_agrees_with_the_model_everywhere(
    tmp_path: Path,
) -> None:
    output = tmp_path / "out.csv"
    with output.open("w", encoding="utf-8", newline="") as stream:
        writer = CsvWriter(stream, COLUMNS)
        for each in ROWS:
            writer.write(each)
    target = tmp_path / "corrected.csv"
    done = CliRunner().invoke(app, ["review", str(output), "--export", str(target)])
    assert done.exit_code == 0, done.output
    rows = exported_csv(load_review(output), {}, target)
    assert all(r["label"] == r["model_label"] for r in rows)
    assert all(r["probability"] == r["model_probability"] for r in rows)
    assert {r["reviewed"] for r in rows} == {"false"}
