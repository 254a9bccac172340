"""Outputs for big runs: Parquet written in row groups as it goes, and each image's embedding
saved beside its row for re-scoring, clustering or search without recomputing."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.output import writers

pq = pytest.importorskip("pyarrow.parquet")
runner = CliRunner()


def run(model: str, command: str, *args: str):  # type: ignore[no-untyped-def]
    base = [command, *args, "--model", model, "-t", "photo", "--labels", "cat,coffee,rocket"]
    return runner.invoke(app, base)


def test_parquet_holds_the_csv_rows_typed(tiny_model: str, photos: Path, tmp_path: Path) -> None:
    (photos / "broken.png").write_bytes(b"not an image")
    table_out, csv_out = tmp_path / "p.parquet", tmp_path / "p.csv"
    assert run(tiny_model, "predict", str(photos), "-k", "2", "-o", str(table_out)).exit_code == 0
    assert run(tiny_model, "predict", str(photos), "-k", "2", "-o", str(csv_out)).exit_code == 0
    table = pq.read_table(table_out).to_pylist()
    with csv_out.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [r["path"] for r in table] == [r["path"] for r in rows]
    for got, want in zip(table, rows, strict=True):
        assert got["label"] == (want["label"] or None)
        if want["probability"]:
            assert got["probability"] == pytest.approx(float(want["probability"]), abs=1e-6)
        else:
            assert got["probability"] is None and "not a readable image" in got["error"]


def test_parquet_is_written_in_row_groups(
    tiny_model: str, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writers.ParquetWriter, "ROW_GROUP", 2)
    out = tmp_path / "l.parquet"
    assert run(tiny_model, "label", str(photos), "-o", str(out)).exit_code == 0
    assert pq.ParquetFile(out).num_row_groups == 2 and pq.read_table(out).num_rows == 4


def test_embeddings_are_saved_beside_each_row(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    (photos / "broken.png").write_bytes(b"not an image")
    out, lines = tmp_path / "l.parquet", tmp_path / "l.jsonl"
    assert run(tiny_model, "label", str(photos), "-o", str(out), "--save-embeddings").exit_code == 0
    table = pq.read_table(out).to_pylist()
    vectors = [np.array(r["embedding"]) for r in table if r["error"] is None]
    assert len(vectors) == 4 and all(v.shape == (32,) for v in vectors)
    assert all(abs(np.linalg.norm(v) - 1) < 1e-4 for v in vectors)
    assert [r["embedding"] for r in table if r["error"]] == [None]
    assert (
        run(tiny_model, "label", str(photos), "-o", str(lines), "--save-embeddings").exit_code == 0
    )
    records = [json.loads(x) for x in lines.read_text().splitlines()]
    by_path = {r["path"]: r["embedding"] for r in table}
    for record in records:
        if record["embedding"] is not None:
            assert record["embedding"] == pytest.approx(by_path[record["path"]], abs=1e-6)


def test_what_a_format_cannot_do_is_refused(tiny_model: str, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "l.parquet"
    assert run(tiny_model, "label", str(photos), "-o", str(out)).exit_code == 0
    resumed = run(tiny_model, "label", str(photos), "-o", str(out), "--resume")
    assert resumed.exit_code == 2 and "cannot be resumed" in resumed.stderr
    as_csv = run(
        tiny_model, "label", str(photos), "-o", str(tmp_path / "l.csv"), "--save-embeddings"
    )
    assert as_csv.exit_code == 2 and "not CSV" in as_csv.stderr
    lines = tmp_path / "l.jsonl"
    assert (
        run(tiny_model, "label", str(photos), "-o", str(lines), "--save-embeddings").exit_code == 0
    )
    other = run(tiny_model, "label", str(photos), "-o", str(lines), "--resume")
    assert other.exit_code == 2 and "columns" in other.stderr
