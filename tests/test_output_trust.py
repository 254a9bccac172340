"""Outputs that survive hostile names and kills: CSV cells a spreadsheet would run are text,
control characters in names never make an output un-resumable, and sorting a kill or the file
systems would break is refused before anything is written."""

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.output.csv_text import ESCAPED_STARTS, SafeCsv, from_cell, to_cell
from clipcls.pathtext import path_to_text, text_to_path

runner = CliRunner()
LABELS = "cat,coffee,rocket"
PNG = (SAMPLE_IMAGES / "chelsea.png").read_bytes()
# Every control character a file name can hold (NUL cannot be in one).
CONTROL = [chr(c) for c in range(1, 32)] + ["\x7f"]
FORMULAS = ["=HYPERLINK(1).png", "+1.png", "-.png", "@SUM(A1).png", "\tx.png", "'=x.png", "''.png"]


def label(model: str, *args: str, labels: str = LABELS):  # type: ignore[no-untyped-def]
    """`clipcls label ARGS`; the arguments after a `--` are file names."""
    options, files = list(args), []
    if "--" in args:
        options, files = list(args[: args.index("--")]), list(args[args.index("--") :])
    common = ["--model", model, "--templates", "photo", "--labels", labels]
    return runner.invoke(app, ["label", *options, *common, *files])


def raw_cells(path: Path) -> list[list[str]]:
    """The CSV's cells as written, before any escape is undone."""
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.reader(stream))


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows as --resume reads them: CSV cells unescaped, JSONL as is; paths as real names."""
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    header, *body = raw_cells(path)
    return [dict(zip(header, map(from_cell, values), strict=True)) for values in body]


def assert_spreadsheet_safe(cells: list[list[str]]) -> None:
    header, *body = cells
    for values in body:
        for name, cell in zip(header, values, strict=True):
            if name.startswith(("probability", "similarity")):
                float(cell or 0)  # a number stays a number
            else:
                assert not cell.startswith(ESCAPED_STARTS[:-1]), (name, cell)


# CSV cells a spreadsheet would run as formulas


@given(st.text())
def test_escaped_cells_are_text_and_read_back_exactly(text: str) -> None:
    cell = to_cell(text)
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert from_cell(cell) == text


def test_a_row_holding_a_carriage_return_reads_back_with_any_csv_reader() -> None:
    stream = io.StringIO()
    writer = SafeCsv(stream, ["path", "probability", "error"])
    writer.row(["a\rb.png", "0.5", ""])
    writer.row(["-\r", "-0.25", "x"])
    assert list(csv.reader(io.StringIO(stream.getvalue(), newline=""))) == [
        ["a\rb.png", "0.5", ""],
        ["'-\r", "-0.25", "x"],
    ]


def test_label_and_predict_csv_cells_are_text_and_resume_maps_them_back(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in FORMULAS:
        (inbox / name).write_bytes(PNG)
    monkeypatch.chdir(inbox)
    out = tmp_path / "out.csv"
    labels = "=cmd()|' A1,-1,@x"
    first = label(tiny_model, "-o", str(out), "-k", "3", "--", *FORMULAS, labels=labels)
    assert first.exit_code == 0, first.output
    assert_spreadsheet_safe(raw_cells(out))
    rows = read_rows(out)
    assert sorted(r["path"] for r in rows) == sorted(FORMULAS)
    assert {r["label"] for r in rows} <= {"=cmd()|' A1", "-1", "@x"}
    again = label(tiny_model, "-o", str(out), "--resume", "-k", "3", "--", *FORMULAS, labels=labels)
    assert again.exit_code == 0, again.output
    assert "nothing left to label" in again.stderr and len(read_rows(out)) == len(FORMULAS)

    predicted = tmp_path / "predicted.csv"
    args = ["predict", "--model", tiny_model, "-t", "photo", "--labels", labels, "-k", "3"]
    done = runner.invoke(app, [*args, "-o", str(predicted), "--", *FORMULAS])
    assert done.exit_code == 0, done.output
    assert_spreadsheet_safe(raw_cells(predicted))
    assert sorted(r["path"] for r in read_rows(predicted)) == sorted(FORMULAS)


def test_evaluate_prediction_cells_are_text(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("=cmd()", "'quoted", "@home"):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "+1.png").write_bytes(PNG)
        (tmp_path / "data" / name / "broken.png").write_bytes(b"not an image")
    monkeypatch.chdir(tmp_path / "data")
    predictions = tmp_path / "p.csv"
    result = runner.invoke(
        app,
        ["evaluate", ".", "--model", tiny_model, "-t", "photo", "--predictions", str(predictions)],
    )
    assert result.exit_code == 0, result.output
    assert_spreadsheet_safe(raw_cells(predictions))
    rows = read_rows(predictions)
    assert {r["true_class"] for r in rows} == {"=cmd()", "'quoted", "@home"}
    assert len(rows) == 6


# Control characters in names never make an output un-resumable


names = st.lists(
    st.text(st.sampled_from([*CONTROL, "a", "'", "=", "-", "."]), min_size=1, max_size=5)
    .map(lambda text: text + ".png")
    .filter(lambda name: os.path.splitext(name)[1] == ".png"),  # `..png` is no image to walks
    min_size=2,
    max_size=4,
    unique=True,
)


def partial_row(kind: str, path: str, cut: float) -> bytes:
    """The first bytes of a row a kill cut short."""
    if kind == "jsonl":
        text = json.dumps({"path": path_to_text(path)}, ensure_ascii=False)
    else:
        stream = io.StringIO()
        csv.writer(stream, quoting=csv.QUOTE_ALL).writerow([path_to_text(path), "x"])
        text = stream.getvalue()
    data = text.encode("utf-8")
    return data[: max(1, int(len(data) * cut))]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["csv", "jsonl"])
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(files=names, unplaced=st.booleans(), cut=st.floats(0, 0.99))
def test_control_characters_in_names_survive_a_killed_move_and_resume(
    tiny_model: str, tmp_path: Path, kind: str, files: list[str], unplaced: bool, cut: float
) -> None:
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    inbox, target, out = work / "inbox", work / "sorted", work / f"out.{kind}"
    inbox.mkdir()
    for i, name in enumerate(files):
        (inbox / name).write_bytes(PNG + bytes([i]))
    *first, late = [str(inbox / name) for name in files]
    sort = ["--sort-into", str(target), "--mode", "move", "-o", str(out), "--include-hidden"]
    assert label(tiny_model, *sort, *first).exit_code == 0
    rows = read_rows(out)
    if unplaced:  # killed between the last row and its move: the file is still in the inbox
        os.rename(text_to_path(rows[-1]["destination"]), text_to_path(rows[-1]["path"]))
    with out.open("ab") as stream:  # and in the middle of the next row
        stream.write(partial_row(kind, late, cut))
    resumed = label(tiny_model, *sort, "--resume", str(inbox))
    assert resumed.exit_code == 0, resumed.output
    rows = read_rows(out)
    assert sorted(text_to_path(r["path"]) for r in rows) == sorted(str(inbox / n) for n in files)
    assert not list(inbox.iterdir())
    for row in rows:
        destination = Path(text_to_path(row["destination"]))
        assert destination.is_file() and destination.parent.parent == target


def many_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True)
    for i, name in enumerate(names):
        Image.effect_noise((640, 480), 40 + i).convert("RGB").save(folder / name, "PNG")


@pytest.mark.slow
def test_kill_9_mid_move_with_every_control_character_then_resume(
    tiny_model: str, tmp_path: Path
) -> None:
    inbox, target, out = tmp_path / "inbox", tmp_path / "sorted", tmp_path / "out.csv"
    files = [f"{c}{i:02d}{c}.png" for i, c in enumerate(CONTROL)]
    many_images(inbox, files)
    args = [str(inbox), "-o", str(out), "--sort-into", str(target), "--mode", "move"]
    args += ["--labels", LABELS, "--templates", "photo", "--batch-size", "1", "-q"]
    command = [sys.executable, "-m", "clipcls", "label", *args, "--model", tiny_model]
    process = subprocess.Popen([*command, "--include-hidden"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (out.read_bytes() if out.exists() else b"").count(
        b"\n"
    ) < 4 + len(CONTROL):  # the header, and a few rows (names hold newlines too)
        time.sleep(0.005)
    process.kill()
    process.wait()
    assert len(list(inbox.iterdir())) > 0  # killed before the end
    finished = subprocess.run([*command, "--include-hidden", "--resume"], timeout=300)
    assert finished.returncode == 0
    rows = read_rows(out)
    assert sorted(Path(text_to_path(r["path"])).name for r in rows) == sorted(files)
    assert not list(inbox.iterdir())
    assert all(Path(text_to_path(r["destination"])).is_file() for r in rows)


# Sorting a kill or the file systems would break is refused before anything is written


def test_parquet_with_move_is_refused_before_anything_is_written(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    pytest.importorskip("pyarrow")
    out, target = tmp_path / "out.parquet", tmp_path / "sorted"
    result = label(
        tiny_model, str(photos), "-o", str(out), "--sort-into", str(target), "--mode", "move"
    )
    assert result.exit_code == 2
    assert "--mode move" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not target.exists() and len(list(photos.iterdir())) == 4
    copied = label(tiny_model, str(photos), "-o", str(out), "--sort-into", str(target))
    assert copied.exit_code == 0, copied.output


SHM = Path("/dev/shm")


@pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm")
def test_hardlinks_across_file_systems_are_refused_before_anything_is_written(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    if os.stat(SHM).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm and the temporary folder are one file system here")
    elsewhere = Path(tempfile.mkdtemp(dir=SHM))
    try:
        target, out = elsewhere / "not" / "yet" / "sorted", tmp_path / "out.csv"
        local = tmp_path / "local"
        local.mkdir()
        (local / "a.png").write_bytes(PNG)
        for inputs in ([str(photos)], [str(elsewhere), str(photos), str(local)]):
            args = [*inputs, "-o", str(out), "--sort-into", str(target), "--mode", "hardlink"]
            result = label(tiny_model, *args)
            assert result.exit_code == 2, result.output
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and "different file systems" in lines[0]
            assert str(photos) in lines[0] and str(local) not in lines[0]
            assert not out.exists() and not (elsewhere / "not").exists()
        linked = tmp_path / "linked"
        args = [str(photos), "-o", str(out), "--sort-into", str(linked), "--mode", "hardlink"]
        assert label(tiny_model, *args).exit_code == 0
        assert all(r["destination"] for r in read_rows(out))
        assert all(os.stat(text_to_path(r["destination"])).st_nlink == 2 for r in read_rows(out))
    finally:
        subprocess.run(["rm", "-rf", str(elsewhere)], check=True)


# Names printed on a terminal


def test_control_characters_in_names_never_reach_the_terminal(
    tiny_model: str, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "\x1b[31mred\x1b]0;title\x07.png").write_bytes(PNG)
    (inbox / "\x1b[2Jbroken\r.png").write_bytes(b"not an image")
    args = ["predict", str(inbox), "--model", tiny_model, "-t", "photo", "--labels", LABELS]
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "\\x1b[31mred" in table.stdout and "\\x1b[2Jbroken\\x0d" in table.stdout
    labeled = label(tiny_model, str(inbox), "-o", str(tmp_path / "out.csv"))
    assert labeled.exit_code == 0, labeled.output
    assert "\\x1b[2Jbroken\\x0d.png" in labeled.stderr
    missing = runner.invoke(app, [*args[:1], str(inbox / "\x1b[2Jgone.png"), *args[2:]])
    assert missing.exit_code != 0 and "\\x1b[2Jgone" in missing.stderr, missing.stderr
    assert "\\x1b[2Jbroken" in table.stderr
    texts = (table.stdout, table.stderr, labeled.stdout, labeled.stderr, missing.stderr)
    for text in texts:
        assert not any(c in text for c in "\x1b\x07\r"), repr(text)
