"""Forged files a run reads (issue 35): calibration files whose numbers are strings, booleans or
absurd, saved embeddings that are no unit vectors, labels CSV rows with cells the header lacks,
and support folders two of which match one label. Each is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SAMPLE_IMAGES
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.engine.sources import model_identity
from clipcls.errors import ClipclsError, UsageError
from clipcls.fewshot.calibration import fit_temperature, read_calibration, templates_identity
from clipcls.fewshot.served import folder_labels
from clipcls.fewshot.support import find_support
from clipcls.labels import parse_labels
from clipcls.multilabel.truth import read_truth
from clipcls.prompts import load_templates
from clipcls.scoring.calibrated import TEMPERATURES, BadNumber
from clipcls.scoring.scorer import Scorer
from clipcls.scoring.spec import Calibrated
from clipcls.settings import ModelSettings
from clipcls.vectors import NotAnEmbedding, check_embedding

runner = CliRunner()
LABELS = ("cat", "coffee", "rocket")


def clipcls(*args: str) -> Any:
    return runner.invoke(app, list(args))


def refused(result: Any, *words: str) -> None:
    """One error line holding each of words, exit 2, no traceback."""
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert "Traceback" not in result.output


def write_calibration(path: Path, model: str, **changes: object) -> Path:
    """A calibration file as evaluate --calibrate writes one for LABELS, with changes."""
    record: dict[str, object] = {
        "format": "clipcls-calibration/1",
        "model": model_identity(ModelSettings(model=model)).key or model,
        "labels": list(LABELS),
        "templates": templates_identity(load_templates("photo")),
        "temperature": 1.0,
        "thresholds": {name: 0.5 for name in LABELS},
        "target_precision": 0.9,
        "support": None,
        "ece_before": 0.1,
        "ece_after": 0.05,
    }
    path.write_text(json.dumps({**record, **changes}))
    return path


def label(model: str, *args: str) -> Any:
    labels = ",".join(LABELS)
    return clipcls("label", *args, "--model", model, "--templates", "photo", "--labels", labels)


# --- calibration files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 1e-300),  # wrote NaN probabilities, exit 0
        ("temperature", "1.0"),  # read as the number 1.0
        ("temperature", True),  # read as 1.0
        ("temperature", 1e300),  # every probability 1/3
        ("temperature", 0.001),  # below what a fit gives
        ("temperature", None),
        ("target_precision", "0.9"),
        ("ece_after", 2.0),
        ("thresholds", {"cat": True}),
    ],
)
def test_a_forged_calibration_number_is_refused_naming_the_file_and_field(
    tiny_model: str, photos: Path, tmp_path: Path, field: str, value: object
) -> None:
    calibration = write_calibration(tmp_path / "c.json", tiny_model, **{field: value})
    out = tmp_path / "out.csv"
    result = label(tiny_model, str(photos), "--calibration", str(calibration), "-o", str(out))
    named = "threshold of cat" if field == "thresholds" else field
    refused(result, f"{calibration} is a damaged calibration file: {named} is ")
    assert not out.exists()


@pytest.mark.parametrize("slope", [1e300, "1", True, float("nan")])
def test_a_forged_logistic_number_is_refused(
    tiny_model: str, photos: Path, tmp_path: Path, slope: object
) -> None:
    fitted = {
        "slopes": [slope, 1.0, 1.0],
        "intercepts": [0.0, 0.0, 0.0],
        "thresholds": {name: 0.5 for name in LABELS},
    }
    calibration = write_calibration(tmp_path / "c.json", tiny_model, multi_label=fitted)
    out = tmp_path / "out.csv"
    result = label(
        tiny_model, str(photos), "--multi-label", "--calibration", str(calibration), "-o", str(out)
    )
    refused(result, f"{calibration} is a damaged calibration file: multi_label slopes[0] is ")
    assert not out.exists()


def test_every_temperature_a_fit_gives_reads_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 200)
    separable = np.eye(3)[targets] * 50.0  # certain and right: the sharpest temperature
    noise = rng.normal(size=(200, 3)) * 50.0  # confident and random: the flattest
    for logits in (separable, noise):
        temperature = fit_temperature(logits, targets)
        assert TEMPERATURES[0] <= temperature <= TEMPERATURES[1]
        path = write_calibration(tmp_path / "c.json", "m", temperature=temperature)
        assert read_calibration(path).temperature == temperature


def test_calibrated_refuses_what_would_make_a_score_no_number() -> None:
    for temperature in (1e-300, float("inf"), "1.0", True):
        with pytest.raises(BadNumber, match="temperature is"):
            Calibrated(temperature=temperature)  # type: ignore[arg-type]
    with pytest.raises(BadNumber, match=r"intercepts\[1\] is NaN"):
        Calibrated(logistic=([1.0, 2.0], [0.0, float("nan")]))
    with pytest.raises(BadNumber, match="one finite number per label"):
        Calibrated(logistic=([1.0, 2.0], [0.0]))


def test_scores_that_are_no_finite_numbers_are_an_error_not_an_answer() -> None:
    # A Scorer built around the checks (a server's absurd logit scale, say): never a NaN row.
    labels = parse_labels("a,b")
    weights = np.eye(2, 4, dtype=np.float32)
    images = np.eye(3, 4, dtype=np.float32)
    assert np.isfinite(Scorer(labels, weights, 100.0).score(images)[0]).all()
    for scorer in (
        Scorer(labels, weights, 100.0, temperature=1e-300),
        Scorer(labels, weights, float("inf")),
        Scorer(labels, weights, 100.0, logit_bias=float("nan")),
    ):
        with pytest.raises(ClipclsError, match="not finite numbers"):
            scorer.score(images)


# --- saved embeddings (--from-embeddings) and the other embeddings read from outside ----------


def save_run(model: str, photos: Path, out: Path) -> Path:
    labels = ",".join(LABELS)
    result = clipcls("label", str(photos), "-o", str(out), "--save-embeddings", "--model", model,
                     "--labels", labels, "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


FORGED = {
    "1000 times": (lambda v: [x * 1000 for x in v], "has length 1000, not 1"),
    "all zeros": (lambda v: [0.0] * len(v), "is all zeros"),
    "NaN": (lambda v: [float("nan"), *v[1:]], "holds NaN"),
    "booleans": (lambda v: [True] + [False] * (len(v) - 1), "is not a list of numbers"),
    "null inside": (lambda v: [None, *v[1:]], "is not a list of numbers"),
    "narrower": (lambda v: v[:5], "has 5 numbers, not 32 like the others"),
}


@pytest.mark.parametrize("forged", sorted(FORGED))
def test_a_saved_embedding_that_is_no_unit_vector_is_refused_naming_its_line(
    tiny_model: str, photos: Path, tmp_path: Path, forged: str
) -> None:
    # The vector 1000 times too long ranked first with 1.000000, the zeros passed as a third
    # for each label: now the file's line and the reason, before anything is written.
    change, reason = FORGED[forged]
    saved = save_run(tiny_model, photos, tmp_path / "run.jsonl")
    rows = [json.loads(line) for line in saved.read_text().splitlines()]
    rows[2]["embedding"] = change(rows[2]["embedding"])
    saved.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "o.csv"
    for args in (("label", "-o", str(out), "--labels", "dog,cat"), ("dedupe",)):
        result = clipcls(args[0], "--from-embeddings", str(saved), *args[1:])
        refused(result, f"{saved}:3: the embedding {reason}")
    assert not out.exists()


@pytest.mark.parametrize("forged", ["1000 times", "all zeros", "narrower"])
def test_a_saved_parquet_embedding_is_checked_alike(
    tiny_model: str, photos: Path, tmp_path: Path, forged: str
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    change, reason = FORGED[forged]
    saved = save_run(tiny_model, photos, tmp_path / "run.parquet")
    table = pq.read_table(saved)
    rows = table.to_pylist()
    rows[1]["embedding"] = change(rows[1]["embedding"])
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), saved)
    refused(clipcls("predict", "--from-embeddings", str(saved), "--labels", "dog,cat"),
            f"{saved} row 2: the embedding {reason}")  # fmt: skip


def test_saved_embeddings_of_another_width_than_the_model_are_refused(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    # Every row cut to one width (or a model whose width changed): a numpy traceback.
    saved = save_run(tiny_model, photos, tmp_path / "run.jsonl")
    rows = [json.loads(line) for line in saved.read_text().splitlines()]
    for row in rows:
        narrow = np.asarray(row["embedding"][:5])
        row["embedding"] = (narrow / np.linalg.norm(narrow)).tolist()
    saved.write_text("".join(json.dumps(row) + "\n" for row in rows))
    for args in (("predict", "--labels", "dog,cat"), ("search", "a cat")):
        result = clipcls(args[0], "--from-embeddings", str(saved), *args[1:], "-q")
        refused(result, f"{saved} holds embeddings of 5 numbers, the model ", "makes 32")


def test_a_nan_embedding_in_the_cache_is_damage_not_an_answer(
    tiny_model: str, photos: Path, isolated_caches: Path
) -> None:
    # The cache's own check let NaN through (|NaN - 1| > 1e-3 is false): NaN probabilities.
    args = ("predict", str(photos), "--model", tiny_model, "--labels", "dog,cat", "-f", "jsonl")
    want = clipcls(*args, "--no-cache").stdout
    assert clipcls(*args).stdout == want
    nan = np.full(32, np.nan, dtype=np.float32).tobytes()
    with sqlite3.connect(isolated_caches / "embeddings.sqlite3") as db:
        db.execute("UPDATE images SET vector = ?", (nan,))
    result = clipcls(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout == want
    assert result.stderr.count("embedding cache") == 1


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([0.6, 0.8], None),
        (np.array([0.6, -0.8], dtype=np.float32), None),
        ([600.0, 800.0], "has length 1000, not 1"),
        ([0.0, 0.0], "is all zeros"),
        ([0.6, 0.8, 0.0], "has 3 numbers, not 2"),
        ([1e300, 0.0], "holds NaN, an infinity or a number beyond float32"),
        ([10**400, 0], "holds NaN"),
        ([True, False], "is not a list of numbers"),
        (["0.6", "0.8"], "is not a list of numbers"),
        ([[0.6, 0.8]], "is not a list of numbers"),
        (np.array([[0.6, 0.8]]), "is not a list of numbers"),
        ("0.6,0.8", "is not a list of numbers"),
        (None, "is not a list of numbers"),
    ],
)
def test_one_check_for_every_embedding_read_from_outside(value: object, reason: str | None) -> None:
    if reason is None:
        assert check_embedding(value, 2).dtype == np.float32
        return
    with pytest.raises(NotAnEmbedding, match=reason):
        check_embedding(value, 2)


# --- evaluate --multi-label's labels CSV -----------------------------------------------------


@pytest.mark.parametrize(
    "row",
    ["chelsea.png,cat,dog", 'chelsea.png,"cat",dog;sky', "chelsea.png,cat,,dog"],
)
def test_a_labels_csv_row_with_more_cells_than_its_header_is_refused(
    tiny_model: str, tmp_path: Path, row: str
) -> None:
    # `chelsea.png,cat,dog` (labels joined by a comma) was read as cat alone, without a word.
    for name in ("chelsea.png", "coffee.png"):
        (tmp_path / name).write_bytes((SAMPLE_IMAGES / name).read_bytes())
    source = tmp_path / "truth.csv"
    source.write_text(f"path,labels\ncoffee.png,cup\n{row}\n")
    report = tmp_path / "r.json"
    result = clipcls("evaluate", "--multi-label", str(source), "--model", tiny_model,
                     "-o", str(report))  # fmt: skip
    refused(result, f"{source}:3: ", "cells, the header has 2", "';'")
    assert not report.exists()


def test_trailing_empty_cells_lose_nothing_and_are_read(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes((SAMPLE_IMAGES / "coffee.png").read_bytes())
    source = tmp_path / "truth.csv"
    source.write_text("path,labels\na.png,cup;table,,\n")  # a spreadsheet's trailing commas
    assert read_truth(source).names_of(0) == ["cup", "table"]


# --- support folders -------------------------------------------------------------------------


def support_folder(root: Path, *names: str) -> Path:
    for index, name in enumerate(names):
        (root / name).mkdir(parents=True)
        photo = ("chelsea.png", "coffee.png", "rocket.jpg")[index % 3]
        (root / name / photo).write_bytes((SAMPLE_IMAGES / photo).read_bytes())
    return root


def test_two_support_folders_for_one_label_are_refused_naming_both(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    # cat/ and Cat/ were merged into one label without a word.
    support = support_folder(tmp_path / "support", "Cat", "cat", "coffee")
    out = tmp_path / "out.csv"
    result = label(tiny_model, str(photos), "--support", str(support), "-o", str(out))
    refused(result, "support folders Cat and cat both match label cat", "merge them")
    assert not out.exists()


def test_two_unicode_forms_of_one_folder_name_are_told_apart_in_the_refusal(
    tmp_path: Path,
) -> None:
    support = support_folder(tmp_path / "support", "cafe\u0301", "caf\u00e9")
    with pytest.raises(UsageError, match=r"'cafe\\u0301' and 'caf\\xe9' both match label café"):
        find_support(support, parse_labels("café,tea"))
    # serve --support takes its labels from the folder names: the same refusal at start
    with pytest.raises(UsageError, match="both match label"):
        find_support(support, folder_labels(support))
