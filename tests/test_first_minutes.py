"""Small lies and surprises of the first five minutes (issue 21): what the summary says, where
outputs go, and one rule for replacing an existing output in every command."""

import io
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES, clipcls_process
from typer.testing import CliRunner

from clipcls.cli import app

runner = CliRunner()


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Two classes of one real photo each."""
    for folder, name in {"cat": "chelsea.png", "cup": "coffee.png"}.items():
        (tmp_path / "data" / folder).mkdir(parents=True)
        shutil.copy(SAMPLE_IMAGES / name, tmp_path / "data" / folder / name)
    return tmp_path / "data"


def evaluate(model: str, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["evaluate", *args, "--model", model, "-t", "photo", "-q"])


def predict(model: str, *args: str):  # type: ignore[no-untyped-def]
    base = ["predict", str(SAMPLE_IMAGES / "chelsea.png"), "--labels", "cat,dog", "-t", "photo"]
    return runner.invoke(app, [*base, *args, "--model", model, "-q"])


def test_report_to_a_folder_writes_its_index_html(
    tiny_model: str, dataset: Path, tmp_path: Path
) -> None:
    # `--report out/` (the help's own example) wrote a file named `out`.
    pytest.importorskip("matplotlib")
    result = evaluate(tiny_model, str(dataset), "--report", f"{tmp_path / 'out'}/")
    assert result.exit_code == 0, result.output
    assert "<html" in (tmp_path / "out" / "index.html").read_text()
    (tmp_path / "old").mkdir()  # an existing folder, named without the slash
    result = evaluate(tiny_model, str(dataset), "--report", str(tmp_path / "old"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "old" / "index.html").is_file()
    missing = evaluate(tiny_model, str(dataset), "--report", f"{tmp_path / 'no' / 'out'}/")
    assert missing.exit_code == 2 and "--report folder does not exist" in missing.stderr


def test_a_report_name_without_a_suffix_gets_html(
    tiny_model: str, dataset: Path, tmp_path: Path
) -> None:
    # `--report report` wrote an extensionless file that no browser opened as a page.
    pytest.importorskip("matplotlib")
    result = evaluate(tiny_model, str(dataset), "--report", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "report").exists()
    assert "<html" in (tmp_path / "report.html").read_text()
    again = evaluate(tiny_model, str(dataset), "--report", str(tmp_path / "report"))
    assert again.exit_code == 2 and "report.html already exists" in again.stderr
    kept = evaluate(tiny_model, str(dataset), "--report", str(tmp_path / "report.htm"))
    assert kept.exit_code == 0 and (tmp_path / "report.htm").is_file()  # a suffix is kept


def test_predict_refuses_to_replace_an_output_without_overwrite(
    tiny_model: str, tmp_path: Path
) -> None:
    # predict -o replaced an existing file silently, while label refused.
    out = tmp_path / "old.csv"
    out.write_text("precious\n")
    refused = predict(tiny_model, "-o", str(out))
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.count("\n") == 1 and "add --overwrite" in refused.stderr
    assert out.read_text() == "precious\n"
    replaced = predict(tiny_model, "-o", str(out), "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert out.read_text().startswith("path,")
    empty = tmp_path / "empty.csv"  # as made by mktemp: nothing to lose
    empty.touch()
    assert predict(tiny_model, "-o", str(empty)).exit_code == 0


@pytest.mark.parametrize(
    ("option", "name"),
    [("--output", "r.json"), ("--predictions", "p.csv"), ("--report", "r.html")],
)
def test_evaluate_refuses_to_replace_an_output_without_overwrite(
    tiny_model: str, dataset: Path, tmp_path: Path, option: str, name: str
) -> None:
    # evaluate's -o, --predictions and --report replaced existing files silently.
    if option == "--report":
        pytest.importorskip("matplotlib")
    out = tmp_path / name
    out.write_text("precious\n")
    refused = evaluate(tiny_model, str(dataset), option, str(out))
    assert refused.exit_code == 2, refused.output
    assert f"{option} {out} already exists: add --overwrite" in refused.stderr
    assert out.read_text() == "precious\n"
    replaced = evaluate(tiny_model, str(dataset), option, str(out), "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert out.read_text() != "precious\n"


def test_label_summary_counts_the_whole_run_not_only_the_images(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    # "4 images in 0.0 s" counted only the image phase of a run that took seconds.
    args = ["label", str(photos), "-o", str(tmp_path / "o.csv"), "--labels", "cat,dog"]
    began = time.monotonic()
    _, _, stderr = clipcls_process(*args, "--model", tiny_model, "-t", "photo")
    wall = time.monotonic() - began
    found = re.search(r"4 images in ([\d.]+) s \([\d.]+ images/s; ([\d.]+) s in all", stderr)
    assert found, stderr
    images, whole = float(found[1]), float(found[2])
    assert images <= whole <= wall + 0.1
    assert whole >= wall / 2  # start-up (imports, model load) counted: most of a tiny run


def test_progress_bar_shows_rate_and_time_left_on_a_small_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 50 images come in two batches: the bar never showed a rate or time left (blank, -:--:--).
    from rich.console import Console

    from clipcls.cli import console

    screen = io.StringIO()
    monkeypatch.setattr(
        console, "stderr", Console(file=screen, force_terminal=True, width=100, color_system=None)
    )

    def batches() -> Iterator[int]:
        for size in (32, 18):
            time.sleep(0.4)  # loading and encoding one batch
            yield from range(size)

    assert len(list(console.tracked(batches(), 50, True, "classifying"))) == 50
    shown = screen.getvalue()
    rates = [float(rate) for rate in re.findall(r"([\d.]+) img/s", shown)]
    assert rates and all(20 <= rate <= 130 for rate in rates), shown  # ~62/s, machine load aside
    assert re.search(r"img/s 0:00:0\d", shown), shown


def test_per_class_table_lists_classes_in_the_json_order() -> None:
    # The terminal table sorted classes worst F1 first; the JSON and the report keep the
    # folders' order (that of the confusion matrix too).
    from types import SimpleNamespace

    import numpy as np
    from rich.console import Console

    from clipcls.evaluation.metrics import compute_metrics
    from clipcls.evaluation.terminal import per_class_table
    from clipcls.labels import parse_labels

    labels = parse_labels("ant,bee,cat")
    scores = np.array([[0.9, 0.05, 0.05]] * 3)  # every image called an ant: its F1 is the best
    metrics = compute_metrics(np.array([0, 1, 2]), scores, 3)
    evaluation = SimpleNamespace(labels=labels, metrics=metrics)
    screen = Console(file=io.StringIO(), width=80, color_system=None)
    screen.print(per_class_table(evaluation))  # type: ignore[arg-type]
    rows = [line.split()[1] for line in screen.file.getvalue().splitlines()[3:-1]]
    assert rows == ["ant", "bee", "cat"]


def test_predict_parquet_refuses_a_terminal_but_writes_to_a_pipe(tiny_model: str) -> None:
    # `predict -f parquet` with no -o poured binary onto the terminal.
    args = [sys.executable, "-m", "clipcls", "predict", str(SAMPLE_IMAGES / "chelsea.png")]
    args += ["--labels", "cat,dog", "-t", "photo", "--model", tiny_model, "-q", "-f", "parquet"]
    leader, follower = os.openpty()
    try:
        done = subprocess.run(args, stdout=follower, stderr=subprocess.PIPE, timeout=300)
    finally:
        os.close(follower)
    os.close(leader)
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 2 and len(lines) == 1, lines
    assert "-f parquet is binary, not for a terminal" in lines[0]
    piped = subprocess.run(args, capture_output=True, timeout=300)
    assert piped.returncode == 0 and piped.stdout.startswith(b"PAR1"), piped.stderr


BOX_DRAWING = re.compile("[\u2500-\u257f]")


def _words(text: str) -> set[str]:
    return set(BOX_DRAWING.sub(" ", text).split())


@pytest.mark.parametrize("columns", [60, 80])
def test_comparison_table_never_breaks_a_word(tiny_model: str, dataset: Path, columns: int) -> None:
    # At 60 columns `local-dir:/tmp/...` folded into `local-di` / `r:/tmp/h` and `templates`
    # into `template` / `s`.
    args = ["evaluate", str(dataset), "--model", tiny_model, "-t", "photo", "-t", "simple", "-q"]
    wide = runner.invoke(app, args, env={"COLUMNS": "300"})
    narrow = runner.invoke(app, args, env={"COLUMNS": str(columns)})
    assert narrow.exit_code == 0, narrow.output
    assert max(map(len, narrow.stdout.splitlines())) <= columns
    assert _words(narrow.stdout) - {"#", "1", "2", "=", "/"} <= _words(wide.stdout), narrow.stdout
    assert f"{tiny_model} / photo" in narrow.stdout or tiny_model in narrow.stdout


def test_evaluate_refuses_two_outputs_on_one_file(dataset: Path, tmp_path: Path) -> None:
    # -o r.csv --predictions r.csv: the predictions silently replaced the report.
    out = str(tmp_path / "same.json")
    result = runner.invoke(app, ["evaluate", str(dataset), "-o", out, "--predictions", out])
    assert result.exit_code == 2 and "must name different files" in result.stderr
    assert not Path(out).exists()


@pytest.mark.parametrize("command", ["predict", "label", "evaluate", "serve"])
def test_help_never_breaks_a_word_at_60_or_80_columns(command: str) -> None:
    # At 80 columns `<table|csv|json|jsonl|parquet>` broke into `...|parq` / `uet>`. (At 60 a
    # few long option names and words are cut with `…` by Typer: cut, not broken.)
    wide = runner.invoke(app, [command, "--help"], env={"COLUMNS": "300"}).stdout
    for columns in (60, 80):
        narrow = runner.invoke(app, [command, "--help"], env={"COLUMNS": str(columns)}).stdout
        broken = {w for w in _words(narrow) - _words(wide) if not w.endswith("…")}
        assert not broken, (columns, broken)
