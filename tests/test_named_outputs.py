"""What a user names is what they get: output formats from extensions, one-file reports, checks
that say what is wrong, and feedback that reads right."""

import csv
import io
import json
from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES
from rich.console import Console
from typer.testing import CliRunner

from clipcls.classify import LabelScore
from clipcls.cli import app
from clipcls.output.rows import Row
from clipcls.output.writers import TableWriter

runner = CliRunner()


def run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


def predict(model: str, *args: str):  # type: ignore[no-untyped-def]
    return run("predict", *args, "--model", model, "-t", "photo", "--labels", "cat,dog,rocket")


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("out.csv", lambda text: next(csv.reader(io.StringIO(text)))[0] == "path"),
        ("out.json", lambda text: isinstance(json.loads(text), list)),
        ("out.jsonl", lambda text: all(json.loads(line) for line in text.splitlines())),
        ("out.txt", lambda text: "┃ image" in text),
    ],
)
def test_predict_writes_the_format_its_output_is_named_for(
    tiny_model: str, photos: Path, tmp_path: Path, name: str, check
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / name
    assert predict(tiny_model, str(photos), "-o", str(out)).exit_code == 0
    assert check(out.read_text(encoding="utf-8"))


def test_a_format_that_contradicts_the_extension_is_refused(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    refused = predict(tiny_model, str(photos), "-o", str(tmp_path / "out.csv"), "-f", "json")
    assert refused.exit_code == 2 and "contradicts the extension" in refused.stderr
    unknown = predict(tiny_model, str(photos), "-o", str(tmp_path / "out.dat"))
    assert unknown.exit_code == 2 and "--format" in unknown.stderr
    assert not (tmp_path / "out.csv").exists()


def six_classes(tmp_path: Path) -> Path:
    dataset = tmp_path / "data"
    names = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "camera.png", "coins.png"]
    for name in names:
        folder = dataset / Path(name).stem
        folder.mkdir(parents=True)
        (folder / name).write_bytes((SAMPLE_IMAGES / name).read_bytes())
    return dataset


def test_evaluate_names_decide_formats_and_k_adds_to_top_5(tiny_model: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    dataset, out, page = six_classes(tmp_path), tmp_path / "ev.json", tmp_path / "my.html"
    args = ["evaluate", str(dataset), "--model", tiny_model, "-t", "photo", "-k", "3"]
    result = run(*args, "-o", str(out), "--report", str(page))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert all(report[k] is not None for k in ("top1", "top3", "top5"))
    assert page.is_file() and page.read_text().startswith("<!doctype html>")


def test_unknown_label_needs_a_threshold_and_a_name_of_its_own(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    base = ["label", str(photos), "-o", str(tmp_path / "l.csv"), "--model", tiny_model]
    base += ["-t", "photo", "--labels", "cat,dog"]
    alone = run(*base, "--unknown-label", "other")
    assert alone.exit_code == 2 and "needs --threshold" in alone.stderr
    merged = run(*base, "--threshold", "0.5", "--unknown-label", "Dog")
    assert merged.exit_code == 2 and "is one of the labels" in merged.stderr


def test_model_mistakes_get_clipcls_own_words(photos: Path) -> None:
    missing = run("predict", str(photos), "--labels", "a,b", "-m", "local-dir:nosuchdir")
    assert missing.exit_code == 2 and "clipcls models export" in missing.stderr
    transformers = run(
        "predict", str(photos), "--labels", "a,b", "-m", "openai/clip-vit-base-patch32"
    )
    assert transformers.exit_code == 2
    assert "ViT-B-32 with --pretrained openai" in transformers.stderr
    assert "hf-hub:" in transformers.stderr


def test_models_cached_with_an_empty_cache_is_not_an_error() -> None:
    result = run("models", "--cached")
    assert result.exit_code == 0 and "no models cached yet" in result.stderr


def test_help_shows_no_type_after_plain_flags() -> None:
    text = run("predict", "--help").stdout
    assert "--quiet" in text and "<bool>" not in text


def test_counts_read_right_and_sorting_says_what_it_did(tiny_model: str, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "one.png").write_bytes((SAMPLE_IMAGES / "chelsea.png").read_bytes())
    base = ["label", str(inbox), "--model", tiny_model, "-t", "photo", "--labels", "cat,dog"]
    base += ["--sort-into", str(tmp_path / "sorted")]
    planned = run(*base, "-o", str(tmp_path / "plan.csv"), "--mode", "move", "--dry-run")
    assert "1 image in" in planned.stderr and "1 images in" not in planned.stderr
    assert "dry run: would move 1 file into" in planned.stderr
    copied = run(*base, "-o", str(tmp_path / "done.csv"))
    assert "copied 1 file into" in copied.stderr
    again = run(*base, "-o", str(tmp_path / "done.csv"), "--resume")
    assert again.exit_code == 0 and "nothing left to label" in again.stderr


def test_narrow_tables_break_paths_at_slashes_and_drop_the_bars() -> None:
    path = "/photos/a rather long folder name/another-deep-subfolder/IMG_20240101_portrait.png"
    screen = io.StringIO()
    writer = TableWriter(Console(file=screen, width=60, emoji=False, markup=False))
    writer.write(Row(path, "cat", (LabelScore("cat", 0.9, 0.3),)))
    writer.close()
    text = screen.getvalue()
    assert "IMG_20240101_portrait.png" in text and "another-deep-subfolder/" in text
    assert "█" not in text and max(len(line) for line in text.splitlines()) <= 60
