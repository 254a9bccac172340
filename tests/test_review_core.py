"""`clipcls review`'s library: outputs read back for review, the review file, and the exports
(corrected output, support folder, re-sorted files)."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_IMAGES
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.errors import UsageError
from clipcls.fewshot.support import find_support
from clipcls.labels import Label
from clipcls.output.csv_text import from_cell
from clipcls.output.rows import Columns, Row
from clipcls.output.writers import CsvWriter, JsonlWriter
from clipcls.pathtext import path_to_text
from clipcls.prediction import LabelScore
from clipcls.review.export import export_corrected, export_support
from clipcls.review.log import ReviewLog, review_path
from clipcls.review.resort import apply_sorting, plan_sorting
from clipcls.review.table import ReviewTable, load_review

runner = CliRunner()
LABELS = ("cat", "coffee", "rocket")
# Names a page, a terminal, a spreadsheet or a CSV reader could take for something else.
ODD = ["[bold]x[i].png", "=cmd()|x.png", "two\r\nlines.png", os.fsdecode(b"caf\xe9.png")]


def label(model: str, *args: str) -> None:
    result = runner.invoke(
        app,
        ["label", *args, "--model", model, "--templates", "photo", "--labels", ",".join(LABELS)],
    )
    assert result.exit_code == 0, result.output


@pytest.fixture
def odd_photos(photos: Path) -> Path:
    for name in ODD:
        (photos / name).write_bytes((SAMPLE_IMAGES / "coffee.png").read_bytes())
    return photos


def write_output(path: Path, rows: list[Row], columns: Columns) -> None:
    """An output as the writers write it (no setup record: like `predict -o`)."""
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = (CsvWriter if path.suffix == ".csv" else JsonlWriter)(stream, columns)
        for row in rows:
            writer.write(row)


def scored(path: str, *pairs: tuple[str, float]) -> Row:
    scores = tuple(LabelScore(name, p, 0.25) for name, p in pairs)
    return Row(path, pairs[0][0], scores, model="m")


# Reading outputs


def test_a_sorted_csv_run_reads_back_with_its_labels_margins_and_odd_names(
    tiny_model: str, odd_photos: Path, tmp_path: Path
) -> None:
    out, sort_dir = tmp_path / "out.csv", tmp_path / "sorted"
    label(tiny_model, str(odd_photos), "-o", str(out), "--top-k", "2", "--sort-into", str(sort_dir))
    table = load_review(out)
    assert table.labels == LABELS and table.unknown_label == "unknown"
    assert table.sort_into == sort_dir.resolve() and table.mode == "copy"
    assert table.margin_source == "top-2" and len(table.rows) == 8
    with out.open(newline="", encoding="utf-8") as stream:
        written = list(csv.DictReader(stream))
    for row, cells in zip(table.rows, written, strict=True):
        assert row.path == from_cell(cells["path"]) and row.label == cells["label"]
        assert row.margin == pytest.approx(row.scores[0][1] - row.scores[1][1])
        assert row.destination is not None and os.path.isfile(
            str(table.destination_path(row.index))
        )
    names = {os.path.basename(table.file_path(row.index)) for row in table.rows}
    assert set(ODD) <= names  # the real file names, bytes and all
    margins = [table.rows[i].margin for i in table.by_margin()]
    assert margins == sorted(margins)  # type: ignore[type-var]


def test_a_top1_jsonl_run_gives_the_top1_bound(
    tiny_model: str, odd_photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    label(tiny_model, str(odd_photos), "-o", str(out), "--top-k", "1")
    table = load_review(out)
    assert table.margin_source == "top-1 bound" and table.sort_into is None
    for row in table.rows:
        assert len(row.scores) == 1
        assert row.margin == pytest.approx(2 * row.scores[0][1] - 1)
    assert {os.path.basename(table.file_path(r.index)) for r in table.rows} >= set(ODD)


def test_parquet_reads_like_csv(tiny_model: str, photos: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    label(tiny_model, str(photos), "-o", str(tmp_path / "a.parquet"), "--top-k", "3")
    label(tiny_model, str(photos), "-o", str(tmp_path / "a.csv"), "--top-k", "3")
    parquet, text = load_review(tmp_path / "a.parquet"), load_review(tmp_path / "a.csv")
    assert parquet.labels == text.labels and parquet.margin_source == "top-2"
    assert [(r.path, r.label) for r in parquet.rows] == [(r.path, r.label) for r in text.rows]


@pytest.mark.parametrize("name", ["p.csv", "p.jsonl"])
def test_predict_outputs_read_back(
    tiny_model: str, photos: Path, tmp_path: Path, name: str
) -> None:
    out = tmp_path / name
    args = ["predict", str(photos), "--model", tiny_model, "--templates", "photo"]
    result = runner.invoke(app, [*args, "--labels", ",".join(LABELS), "-o", str(out)])
    assert result.exit_code == 0, result.output
    table = load_review(out)
    assert set(table.labels) == set(LABELS) and len(table.rows) == 4
    assert all(row.label == row.scores[0][0] for row in table.rows)
    assert table.margin_source == "top-2" and table.sort_into is None


def test_without_a_setup_record_labels_come_from_the_rows_and_error_rows_stay(
    tmp_path: Path,
) -> None:
    out = tmp_path / "predict.csv"
    rows = [
        scored("a.png", ("dog", 0.6), ("cat", 0.4)),
        Row("gone.png", error="cannot read gone.png"),
        scored("b.png", ("cat", 0.9), ("bird", 0.1)),
    ]
    write_output(out, rows, Columns(top_k=2))
    table = load_review(out)
    assert table.labels == ("dog", "cat", "bird")
    gone = table.rows[1]
    assert gone.error == "cannot read gone.png" and gone.margin is None and gone.label == ""
    assert table.by_margin() == [0, 2, 1]  # error rows last


def test_ten_thousand_rows_load_from_csv_and_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "big.jsonl"
    rng = np.random.default_rng(0)
    rows = [
        scored(f"img/{i}.jpg", ("cat", p), ("dog", 1 - p)) for i, p in enumerate(rng.random(10_000))
    ]
    write_output(out, rows, Columns(top_k=2, model=True))
    write_output(out.with_suffix(".csv"), rows, Columns(top_k=2, model=True))
    for path in (out, out.with_suffix(".csv")):
        # how fast: benchmarks/review.py (whole process until the first page is served)
        assert len(load_review(path).rows) == 10_000


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("other.csv", b"name,score\na.png,0.5\n"),
        ("other.jsonl", b"this is not json\n"),
        ("records.jsonl", b'{"file": "a.png"}\n'),
        ("random.csv", bytes(range(256)) * 8),
        ("random.parquet", os.urandom(2048)),
        ("empty.csv", b""),
        ("empty.jsonl", b""),
        ("header-only.csv", b"path,label,probability,similarity,error\n"),
        ("scores.jsonl", b'{"path": "a.png", "predictions": "none"}\n'),
        ("notes.txt", b"path,label\n"),
    ],
)
def test_files_clipcls_did_not_write_are_refused_in_one_line(
    tmp_path: Path, name: str, content: bytes
) -> None:
    if name.endswith(".parquet"):
        pytest.importorskip("pyarrow")
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UsageError) as refused:
        load_review(path)
    assert name in str(refused.value) and "\n" not in str(refused.value)
    assert path.read_bytes() == content


def test_a_missing_output_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such output"):
        load_review(tmp_path / "nope.csv")


def test_a_torn_last_line_is_left_out_with_a_note(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    write_output(out, [scored("a.png", ("cat", 0.7), ("dog", 0.3))], Columns(top_k=2))
    with out.open("ab") as stream:
        stream.write(b'{"path": "b.png", "predic')
    table = load_review(out)
    assert [r.path for r in table.rows] == ["a.png"] and "cut short" in table.notes[0]


# The review file


@pytest.fixture
def table(tmp_path: Path) -> ReviewTable:
    out = tmp_path / "out.csv"
    rows = [scored(f"{i}.png", ("cat", 0.6), ("dog", 0.4)) for i in range(5)]
    write_output(out, [*rows, Row("bad.png", error="unreadable")], Columns(top_k=2, model=True))
    return load_review(out)


def test_decisions_undo_and_replay(table: ReviewTable) -> None:
    with ReviewLog.open(table) as log:
        log.decide(0, "dog", "set")
        log.decide(1, "", "unknown")
        log.decide(2, "", "accept")
        assert log.undo() is not None and log.undo() is not None  # accept, then unknown
        log.decide(3, "cat", "accept")
        assert log.progress() == (2, 1, 3)
    with ReviewLog.open(table) as log:
        assert {i: d.label for i, d in log.current().items()} == {0: "dog", 3: "cat"}
        assert log.current()[0].previous == "cat" and log.progress() == (2, 1, 3)
        assert log.undo().index == 3  # type: ignore[union-attr]
    with ReviewLog.open(table) as log:
        assert list(log.current()) == [0]
    lines = review_path(table.output).read_text().splitlines()
    header = json.loads(lines[0])
    assert header["record"] == "clipcls-review/1" and len(header["output_digest"]) == 64
    assert json.loads(lines[1])["action"] == "set" and json.loads(lines[4]) == {"seq": 4, "undo": 3}


def test_bad_decisions_are_refused(table: ReviewTable) -> None:
    with ReviewLog.open(table) as log:
        for index, name, action in [(0, "horse", "set"), (0, "cat", "guess"), (9, "cat", "set")]:
            with pytest.raises(UsageError):
                log.decide(index, name, action)
        with pytest.raises(UsageError, match="could not be read"):
            log.decide(5, "cat", "set")
        assert log.current() == {}


def test_a_second_reviewer_is_refused_with_the_holders_pid(table: ReviewTable) -> None:
    with ReviewLog.open(table):
        with pytest.raises(UsageError, match=f"pid {os.getpid()}"):
            ReviewLog.open(table)
    ReviewLog.open(table).close()  # free again once closed


def test_exports_read_the_decisions_while_the_page_holds_the_review(table: ReviewTable) -> None:
    """An export reads without the lock and changes nothing: a torn line stays for the page."""
    with ReviewLog.read(table) as empty:  # no review file yet: no decisions, none made
        assert empty.current() == {} and not review_path(table.output).exists()
    with ReviewLog.open(table) as page:
        page.decide(0, "dog", "set")
        with review_path(table.output).open("ab") as stream:
            stream.write(b'{"seq": 2, "ind')
        before = review_path(table.output).read_bytes()
        with ReviewLog.read(table) as export:
            assert {i: d.label for i, d in export.current().items()} == {0: "dog"}
            with pytest.raises(UsageError, match="opened to read"):
                export.decide(1, "dog", "set")
        assert review_path(table.output).read_bytes() == before


def test_a_torn_decision_is_cut_off_with_a_note(table: ReviewTable) -> None:
    with ReviewLog.open(table) as log:
        log.decide(0, "dog", "set")
    with review_path(table.output).open("ab") as stream:
        stream.write(b'{"seq": 2, "index": 1, "pa')
    with ReviewLog.open(table) as log:
        assert list(log.current()) == [0] and "cut-off" in log.notes[0]
        log.decide(1, "dog", "set")
    with ReviewLog.open(table) as log:
        assert sorted(log.current()) == [0, 1] and not log.notes


def test_a_review_file_of_another_output_or_a_foreign_file_is_refused(
    table: ReviewTable,
    tmp_path: Path,
) -> None:
    other = tmp_path / "other.csv"
    write_output(other, [scored("z.png", ("cat", 0.9), ("dog", 0.1))], Columns(top_k=2, model=True))
    ReviewLog.open(load_review(other)).close()
    review_path(other).replace(review_path(table.output))
    with pytest.raises(UsageError, match="review of another output"):
        ReviewLog.open(table)
    foreign = b"my own notes\n"
    review_path(table.output).write_bytes(foreign)
    with pytest.raises(UsageError, match="not a clipcls review file"):
        ReviewLog.open(table)
    assert review_path(table.output).read_bytes() == foreign


def test_decisions_for_rows_that_changed_are_dropped_with_a_note(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    rows = [scored(f"{i}.png", ("cat", 0.6), ("dog", 0.4)) for i in range(3)]
    write_output(out, rows, Columns(top_k=2, model=True))
    with ReviewLog.open(load_review(out)) as log:
        log.decide(0, "dog", "set")
        log.decide(2, "dog", "set")
    rows[2] = scored("new.png", ("cat", 0.6), ("dog", 0.4))  # same first row: same digest
    write_output(out, rows, Columns(top_k=2, model=True))
    with ReviewLog.open(load_review(out)) as log:
        assert list(log.current()) == [0] and "dropped" in log.notes[0]


KILLED = """
import sys
from pathlib import Path
from clipcls.review.log import ReviewLog
from clipcls.review.table import ReviewTable, load_review
log = ReviewLog.open(load_review(Path(sys.argv[1])))
n = 0
while True:
    log.decide(n % 5, "dog" if n % 2 else "cat", "set")
    n += 1
    print(n, flush=True)
"""


@pytest.mark.slow
def test_a_kill_loses_at_most_the_decision_in_flight(table: ReviewTable) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(table.output)], stdout=subprocess.PIPE, env=env
    )
    assert child.stdout is not None
    printed = [b"0"]
    while int(printed[-1]) < 50:
        printed = [child.stdout.readline()]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    acknowledged = int((printed + child.stdout.read().split())[-1])  # decide() returned
    with ReviewLog.open(table) as log:  # the lock died with the process; a torn line is cut
        assert len(log.current()) == 5
    kept = review_path(table.output).read_bytes().count(b"\n") - 1  # less the header
    assert acknowledged <= kept <= acknowledged + 1  # at most the one in flight is lost


# Exports


@pytest.fixture
def sorted_run(tiny_model: str, odd_photos: Path, tmp_path: Path) -> ReviewTable:
    out, sort_dir = tmp_path / "out.csv", tmp_path / "sorted"
    label(
        tiny_model, str(odd_photos), "-o", str(out), "--sort-into", str(sort_dir), "--mode", "move"
    )
    return load_review(out)


def other_label(name: str) -> str:
    return next(candidate for candidate in LABELS if candidate != name)


def test_export_corrected_csv_keeps_every_column_and_its_protections(
    sorted_run: ReviewTable,
    tmp_path: Path,
) -> None:
    table = sorted_run
    with ReviewLog.open(table) as log:
        changed = log.decide(0, other_label(table.rows[0].label), "set")
        log.decide(1, "", "accept")
        decisions = log.current()
    target = tmp_path / "corrected.csv"
    assert export_corrected(table, decisions, target) == len(table.rows)
    with table.output.open(newline="", encoding="utf-8") as stream:
        original = list(csv.reader(stream))
    with target.open(newline="", encoding="utf-8") as stream:
        exported = list(csv.reader(stream))
    head = original[0]
    model = ["model_label", "model_probability"]
    assert exported[0] == [*head[:2], *model, *head[2:-1], "reviewed", "error"]
    for number, (before, after) in enumerate(zip(original[1:], exported[1:], strict=True)):
        assert after[2:4] == before[1:3]  # the model's answer, as the run wrote it
        if number == 0:  # changed to a label outside the run's top-1: no probability for it
            assert after[:2] + after[4:6] == [before[0], changed.label, "", ""]
            assert after[6:-2] == before[4:-1]
        else:
            assert after[:2] + after[4:-2] == before[:-1]
        assert after[-2] == ("true" if number < 2 else "false")
    assert not list(tmp_path.glob(".corrected.csv.*"))  # no temporary left behind


def test_exported_cells_keep_the_writers_escapes(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    odd = os.fsdecode(b"=cmd()\r\n[/b]\xff.png")
    rows = [
        scored(odd, ("=SUM(1)", 0.6), ("[/b]", 0.4)),
        scored("b.png", ("[/b]", 0.7), ("=SUM(1)", 0.3)),
    ]
    write_output(out, rows, Columns(top_k=2, model=True))
    table = load_review(out)
    assert table.rows[0].path == path_to_text(odd) and table.file_path(0) == odd
    with ReviewLog.open(table) as log:
        decisions = {0: log.decide(0, "[/b]", "set"), 1: log.decide(1, "=SUM(1)", "set")}
    target = tmp_path / "corrected.csv"
    export_corrected(table, decisions, target)
    raw = target.read_bytes().decode("utf-8")
    assert "'=cmd()" in raw and "'=SUM(1)" in raw and "\r" in raw  # escaped as the writers do
    with target.open(newline="", encoding="utf-8") as stream:
        cells = [[from_cell(cell) for cell in row] for row in csv.reader(stream)]
    assert [row[:2] for row in cells[1:]] == [[path_to_text(odd), "[/b]"], ["b.png", "=SUM(1)"]]
    jsonl = tmp_path / "corrected.jsonl"
    export_corrected(table, decisions, jsonl)
    records = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert records[0]["path"] == path_to_text(odd) and records[0]["label"] == "[/b]"
    assert records[0]["probability_2"] == 0.4 and records[0]["reviewed"] is True


def test_a_jsonl_output_exports_the_csv_its_csv_twin_does(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    for name in ("a.csv", "a.jsonl"):
        label(tiny_model, str(photos), "-o", str(tmp_path / name), "--top-k", "2")
        table = load_review(tmp_path / name)
        with ReviewLog.open(table) as log:
            decisions = {1: log.decide(1, other_label(table.rows[1].label), "set")}
        export_corrected(table, decisions, tmp_path / f"{name}.out.csv")
    assert (tmp_path / "a.csv.out.csv").read_text() == (tmp_path / "a.jsonl.out.csv").read_text()


def test_export_corrected_jsonl_keeps_the_embeddings(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    label(tiny_model, str(photos), "-o", str(out), "--save-embeddings")
    table = load_review(out)
    with ReviewLog.open(table) as log:
        log.decide(2, other_label(table.rows[2].label), "set")
        decisions = log.current()
    target = tmp_path / "corrected.jsonl"
    export_corrected(table, decisions, target)
    records = [json.loads(line) for line in target.read_text().splitlines()]
    originals = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["reviewed"] for r in records] == [i == 2 for i in range(len(records))]
    assert records[2]["label"] == decisions[2].label
    for record, original in zip(records, originals, strict=True):
        assert record["embedding"] == original["embedding"] and record["path"] == original["path"]
        assert list(record)[:2] == ["path", "label"] and list(record)[-1] == "embedding"


def test_export_never_replaces_the_output_or_its_review(table, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    before = table.output.read_bytes()
    ReviewLog.open(table).close()
    for target in (table.output, review_path(table.output), tmp_path / "x.parquet"):
        with pytest.raises(UsageError):
            export_corrected(table, {}, target)
    assert table.output.read_bytes() == before


def test_export_support_is_a_support_folder_for_the_same_labels(
    sorted_run: ReviewTable,
    tmp_path: Path,
) -> None:
    table = sorted_run
    with ReviewLog.open(table) as log:
        for row in table.rows[:5]:
            log.decide(row.index, "", "accept")
        log.decide(5, other_label(table.rows[5].label), "set")
        log.decide(6, "", "unknown")
        decisions = log.current()
    folder, problems = tmp_path / "support", list[str]()
    assert export_support(table, decisions, folder, problems) == 6 and problems == []
    links = [p for p in folder.rglob("*") if p.is_symlink()]
    assert len(links) == 6 and all(os.path.isabs(os.readlink(p)) and p.exists() for p in links)
    found = find_support(folder, [Label(name, (name,)) for name in LABELS])
    assert len(found.paths) == 6 and not found.empty
    assert sorted(LABELS[t] for t in found.targets) == sorted(decisions[i].label for i in range(6))
    assert export_support(table, decisions, folder) == 6  # again: the same links, no new ones
    assert len([p for p in folder.rglob("*") if p.is_symlink()]) == 6
    os.unlink(str(table.destination_path(0)))
    assert export_support(table, decisions, tmp_path / "again", problems) == 5
    assert "1 reviewed file(s) are gone" in problems[0]


def test_apply_moves_a_file_to_its_corrected_folder_without_overwriting(
    sorted_run: ReviewTable,
) -> None:
    table = sorted_run
    index = next(
        r.index for r in table.rows if os.path.basename(table.file_path(r.index)) == ODD[1]
    )
    row, placed = table.rows[index], Path(table.destination_path(index))  # type: ignore[arg-type]
    new = other_label(row.label)
    squatter = table.sort_into / new / placed.name  # type: ignore[operator]
    squatter.parent.mkdir(exist_ok=True)
    squatter.write_bytes(b"someone else's file")
    with ReviewLog.open(table) as log:
        log.decide(index, new, "set")
        decisions = log.current()
    moves, problems = plan_sorting(table, decisions)
    assert len(moves) == 1 and problems == [] and placed.exists()  # a plan touches nothing
    assert apply_sorting(table, decisions).moved == 1  # no problems: counts, not a list now
    moved = moves[0].target
    assert not placed.exists() and moved.parent == squatter.parent and moved != squatter
    assert squatter.read_bytes() == b"someone else's file" and moved.is_file()
    from clipcls.review.api import ReviewApi
    from clipcls.review.thumbs import Thumbs

    with ReviewLog.open(table) as log:  # the page finds the file where the apply put it
        page = ReviewApi(table, log, Thumbs(table.output.parent / "thumbs"))
        assert page.source(index) == str(moved) and not page.missing(index)
    applied = apply_sorting(table, decisions)
    assert (applied.moved, applied.problems) == (0, ())
    assert plan_sorting(table, decisions) == ([], [])
    with ReviewLog.open(table) as log:  # a change of mind moves it back
        log.undo()
        decisions = log.current()
    assert apply_sorting(table, decisions).problems == ()
    assert not moved.exists() and len(list(placed.parent.glob("=cmd()|x*.png"))) == 1


def test_apply_relinks_a_symlinked_file(tiny_model: str, photos: Path, tmp_path: Path) -> None:
    out, sort_dir = tmp_path / "out.jsonl", tmp_path / "sorted"
    label(
        tiny_model, str(photos), "-o", str(out), "--sort-into", str(sort_dir), "--mode", "symlink"
    )
    table = load_review(out)
    with ReviewLog.open(table) as log:
        new = other_label(table.rows[0].label)
        log.decide(0, new, "set")
        decisions = log.current()
    assert apply_sorting(table, decisions).problems == ()
    links = list((sort_dir / new).iterdir())
    relinked = [p for p in links if os.path.realpath(p) == os.path.realpath(table.file_path(0))]
    assert len(relinked) == 1 and relinked[0].is_symlink()
    assert not os.path.lexists(table.destination_path(0))  # type: ignore[arg-type]


def test_apply_needs_a_sorted_run(table: ReviewTable) -> None:
    with pytest.raises(UsageError, match="--sort-into"):
        apply_sorting(table, {})
