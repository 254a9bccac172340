"""The format objects themselves: rows written by a format read back equal, a torn last line is
left out and measured, the table finds each format by name and suffix, and a file clipcls did
not write is refused with the reason."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from clipcls.errors import UsageError
from clipcls.output.formats import (
    FORMATS,
    LABEL_FORMATS,
    RESULT_FORMATS,
    SUFFIXES,
    Format,
    format_for,
    format_of,
)
from clipcls.output.reading import MAX_LINE, Unreadable
from clipcls.output.rows import Columns, Row
from clipcls.prediction import LabelScore

ODD = "=cmd() 'quoted'\r\nand a new line.png"  # a formula, a quote, CR and LF in one name


def rows() -> list[Row]:
    """Rows whose text needs every escape CSV and JSON have, an unreadable one among them."""
    scores = (LabelScore("=cat", 0.75, 0.31), LabelScore('d"og', 0.25, 0.12))
    vector = np.array([0.6, -0.8, 1e-8], dtype=np.float32)  # unit length, as embeddings are
    return [
        Row("a.png", "=cat", scores, model="m", destination="out/=cat/a.png", embedding=vector),
        Row(ODD, "unknown", scores, model="m", destination="", embedding=-vector),
        Row("gone.png", error="cannot read gone.png\nat all", model="m"),
    ]


def write(fmt: Format, path: Path, columns: Columns, written: list[Row]) -> None:
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = fmt.writer(stream, columns)
        for row in written:
            writer.write(row)
        writer.close()


def expected(fmt: Format, columns: Columns, row: Row, embeddings: bool) -> dict[str, object]:
    """What reading gives back: the JSON object for JSONL; for CSV and Parquet the CSV cells
    (escapes undone), and Parquet's embedding as the floats it holds."""
    if not fmt.flat:
        record = json.loads(json.dumps(columns.record(row)))
        return record if embeddings else {k: v for k, v in record.items() if k != "embedding"}
    cells: dict[str, object] = dict(zip(columns.header(), columns.csv_values(row), strict=True))
    if columns.embedding:
        cells.pop("embedding")
    if embeddings:
        cells["embedding"] = None if row.embedding is None else row.embedding.tolist()
    return cells


@pytest.mark.parametrize("fmt", LABEL_FORMATS, ids=repr)
@pytest.mark.parametrize("embeddings", [False, True])
def test_rows_written_read_back_equal(tmp_path: Path, fmt: Format, embeddings: bool) -> None:
    if fmt is Format.PARQUET:
        pytest.importorskip("pyarrow")
    saving = embeddings and fmt.holds_embeddings
    columns = Columns(2, best_label=True, model=True, destination="destination", embedding=saving)
    path = tmp_path / f"out.{fmt.name}"
    write(fmt, path, columns, rows())
    stored = fmt.read(path, embeddings=saving)
    assert list(stored.rows) == [expected(fmt, columns, row, saving) for row in rows()]
    if fmt.flat:  # Parquet keeps its embedding column last, after the error
        assert sorted(stored.header or ()) == sorted(columns.header())
    else:
        assert stored.header is None
    assert (stored.complete_bytes, stored.dropped_bytes) == (path.stat().st_size, 0)


@pytest.mark.parametrize("fmt", [f for f in LABEL_FORMATS if f.resumable], ids=repr)
def test_a_torn_last_line_is_left_out_and_measured(tmp_path: Path, fmt: Format) -> None:
    columns = Columns(1, model=True)
    path = tmp_path / f"out.{fmt.name}"
    write(fmt, path, columns, rows()[:2])
    complete = path.stat().st_size
    # a kill mid-row: for CSV inside a quoted name, whose newline is data, not a row's end
    torn = b'"half\nof a name.png,ca' if fmt.flat else b'{"path": "half.png", "pre'
    with path.open("ab") as stream:
        stream.write(torn)
    stored = fmt.read(path)
    assert len(list(stored.rows)) == 2
    assert (stored.complete_bytes, stored.dropped_bytes) == (complete, len(torn))


def test_an_empty_file_holds_no_rows(tmp_path: Path) -> None:
    for fmt in (Format.CSV, Format.JSONL):
        path = tmp_path / f"empty.{fmt.name}"
        path.touch()
        stored = fmt.read(path)
        assert (stored.header, list(stored.rows), stored.complete_bytes) == (None, [], 0)


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("a.jsonl", b'{"path": "a.png"}\nnot json\n', "line 2 is not JSON"),
        ("a.jsonl", b'{"path": "a.png"}\n[1, 2]\n', "line 2 is not a record with a path"),
        ("a.jsonl", b'{"path": "caf\xe9.png"}\n', "not UTF-8 text"),
        ("a.jsonl", b'{"path": "' + b"x" * MAX_LINE + b'"}\n', "a line longer than 1 MiB"),
        ("a.csv", b"path,label\na.png\n", "line 2 has 1 fields"),
        ("a.csv", b"path,label\ncaf\xe9.png,cat\n", "not UTF-8 text"),
        ("a.parquet", b"PAR1 not really\n", "Parquet"),
    ],
)
def test_a_file_clipcls_did_not_write_is_refused_saying_why(
    tmp_path: Path, name: str, content: bytes, why: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    fmt = format_of(path)
    assert fmt is not None
    if fmt is Format.PARQUET:
        pytest.importorskip("pyarrow")
    with pytest.raises(Unreadable, match="is not a clipcls output") as refused:
        list(fmt.read(path).rows)
    assert why in refused.value.why


def test_the_table_finds_each_format_by_name_and_suffix() -> None:
    assert list(FORMATS) == ["table", "csv", "json", "jsonl", "parquet"]  # --format's order
    for name, fmt in FORMATS.items():
        assert fmt.name == name and repr(fmt) == f"Format.{name.upper()}"
        assert all(SUFFIXES[suffix] is fmt for suffix in fmt.suffixes)
    assert format_of(Path("run.NDJSON")) is Format.JSONL
    assert format_of(Path("dir.v2/run.jsonl")) is Format.JSONL
    assert format_of(Path("hits.Csv")) is Format.CSV
    assert format_of(Path("shown.txt")) is Format.TABLE
    assert format_of(Path("run.parquet")) is Format.PARQUET
    assert format_of(Path("run.json")) is Format.JSON
    assert format_of(Path("run.tsv")) is None and format_of(Path("run")) is None


def test_format_for_takes_the_option_then_the_name_then_the_first_allowed() -> None:
    assert format_for(None, None) is Format.TABLE
    assert format_for(Path("a.jsonl"), None) is Format.JSONL
    assert format_for(Path("a.jsonl"), Format.JSONL) is Format.JSONL
    assert format_for(None, None, LABEL_FORMATS) is Format.CSV
    with pytest.raises(UsageError, match="contradicts the extension"):
        format_for(Path("a.csv"), Format.JSONL)
    with pytest.raises(UsageError, match=re.escape("writes table|csv|json|jsonl, not parquet")):
        format_for(Path("a.parquet"), None, RESULT_FORMATS)


def test_what_each_format_can_do() -> None:
    """The rules callers ask about instead of which format it is."""
    assert [f.name for f in FORMATS.values() if f.resumable] == ["csv", "jsonl"]
    assert [f.name for f in FORMATS.values() if f.holds_embeddings] == ["jsonl", "parquet"]
    assert [f.name for f in FORMATS.values() if f.flat] == ["csv", "parquet"]
    assert [f.name for f in FORMATS.values() if f.binary] == ["parquet"]
    assert [f.name for f in FORMATS.values() if f.for_people] == ["table"]


def test_result_records_round_trip_and_parquet_writes_none(tmp_path: Path) -> None:
    import io

    columns, records = ("rank", "path", "score"), [(1, ODD, 0.5), (2, "b.png", 0.25)]
    stream = io.StringIO()
    Format.JSONL.write_records(stream, columns, records)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines == [dict(zip(columns, record, strict=True)) for record in records]
    path = tmp_path / "hits.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        Format.CSV.write_records(out, columns, records)
    read = [list(cells.values()) for cells in Format.CSV.read(path).rows]
    assert read == [["1", ODD, "0.500000"], ["2", "b.png", "0.250000"]]
    with pytest.raises(UsageError, match="not written as parquet"):
        Format.PARQUET.write_records(io.StringIO(), columns, records)
    with pytest.raises(UsageError, match="does not read table outputs back"):
        Format.TABLE.read(path)


def test_saved_embeddings_cut_short_are_refused_not_half_read(tmp_path: Path) -> None:
    """--from-embeddings reads every row or none: a torn last line names the file and the fix."""
    from clipcls.output.saved import read_saved

    path = tmp_path / "run.jsonl"
    write(Format.JSONL, path, Columns(1, model=True, embedding=True), rows()[:2])
    assert len(read_saved(path).images) == 2
    with path.open("ab") as stream:
        stream.write(b'{"path": "c.png", "embedding": [0.1')
    with pytest.raises(UsageError, match="run.jsonl ends in a partial line .* --resume"):
        read_saved(path)
