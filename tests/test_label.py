"""`clipcls label`: one row per file, never clobbering, resuming after kills, sorting files."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES
from PIL import Image
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.labeling.sorting import safe_folder_name

runner = CliRunner()
LABELS = "cat,coffee,rocket"


def label(model: str, *args: str):
    return runner.invoke(
        app, ["label", *args, "--model", model, "--templates", "photo", "--labels", LABELS]
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def assert_same_rows(got: list[dict[str, str]], want: list[dict[str, str]]) -> None:
    """Equal rows; scores may differ in the 6th decimal, since a resumed run batches differently
    and float32 matrix products depend on the batch shape in their last bits."""
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert list(a) == list(b)
        for column in a:
            if column.startswith(("probability", "similarity")) and a[column]:
                assert float(a[column]) == pytest.approx(float(b[column]), abs=2e-6), column
            else:
                assert a[column] == b[column], column


def copy_setup(source: Path, target: Path) -> None:
    """Give a hand-cut output the setup record its source run wrote beside it."""
    setup = Path(f"{source}.clipcls.json")
    Path(f"{target}.clipcls.json").write_bytes(setup.read_bytes())


def copy_photos(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for name in names:
        target = folder / name
        target.write_bytes((SAMPLE_IMAGES / "chelsea.png").read_bytes())
        copies.append(target)
    return copies


def test_one_row_per_file_failures_included(tiny_model: str, photos: Path, tmp_path: Path) -> None:
    (photos / "broken.jpg").write_bytes(b"GIF89a nonsense")
    out = tmp_path / "labels.csv"
    result = label(tiny_model, str(photos), "--output", str(out), "--top-k", "2")
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert list(rows[0]) == [
        "path",
        "label",
        "probability",
        "similarity",
        "label_2",
        "probability_2",
        "model",
        "error",
    ]
    assert [Path(r["path"]).name for r in rows] == [
        "astronaut.png",
        "broken.jpg",
        "chelsea.png",
        "coffee.png",
        "rocket.jpg",
    ]
    broken = rows[1]
    assert broken["label"] == "" and "not a readable image" in broken["error"]
    for row in rows[:1] + rows[2:]:
        assert row["label"] in LABELS.split(",") and row["error"] == ""
        assert row["model"] == tiny_model
    assert "images/s" in result.stderr and "unreadable" in result.stderr


def test_format_follows_the_extension(tiny_model: str, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    assert label(tiny_model, str(photos), "-o", str(out)).exit_code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4 and set(records[0]) == {"path", "label", "predictions", "model"}
    assert all(r["label"] == r["predictions"][0]["label"] for r in records)
    text = tmp_path / "labels.txt"
    refused = label(tiny_model, str(photos), "-o", str(text))
    assert refused.exit_code == 2 and "writes csv|jsonl|parquet, not table" in refused.stderr
    contradicted = label(tiny_model, str(photos), "-o", str(out), "--format", "csv", "--overwrite")
    assert contradicted.exit_code == 2 and "contradicts the extension" in contradicted.stderr
    odd = tmp_path / "labels.out"
    assert "--format csv|jsonl" in label(tiny_model, str(photos), "-o", str(odd)).stderr
    assert label(tiny_model, str(photos), "-o", str(odd), "--format", "csv").exit_code == 0
    assert odd.read_text().startswith("path,label,probability")
    assert b"\r" not in odd.read_bytes()


def test_existing_output_is_never_silently_overwritten(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "labels.csv"
    out.write_text("precious\n")
    refused = label(tiny_model, str(photos), "-o", str(out))
    assert (
        refused.exit_code == 2 and "--resume" in refused.stderr and "--overwrite" in refused.stderr
    )
    assert out.read_text() == "precious\n"
    assert label(tiny_model, str(photos), "-o", str(out), "--overwrite").exit_code == 0
    assert len(read_csv(out)) == 4


def test_resume_after_a_hard_kill_gives_the_uninterrupted_rows(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    full = tmp_path / "full.csv"
    assert label(tiny_model, str(photos), "-o", str(full), "-k", "2").exit_code == 0
    killed = tmp_path / "killed.csv"
    text = full.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    # Two complete rows, then a third cut mid-way, as a kill -9 during a write leaves it.
    killed.write_text("".join(lines[:3]) + lines[3][:17], encoding="utf-8")
    copy_setup(full, killed)
    result = label(tiny_model, str(photos), "-o", str(killed), "-k", "2", "--resume")
    assert result.exit_code == 0, result.output
    assert "dropped a partial last line" in result.stderr
    assert_same_rows(read_csv(killed), read_csv(full))
    again = label(tiny_model, str(photos), "-o", str(killed), "-k", "2", "--resume")
    assert again.exit_code == 0
    assert_same_rows(read_csv(killed), read_csv(full))
    assert "nothing left to label" in again.stderr


def test_resume_with_other_columns_or_model_is_refused(
    tiny_model: str, tiny_biased_model: str, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "labels.csv"
    assert label(tiny_model, str(photos), "-o", str(out)).exit_code == 0
    other_columns = label(tiny_model, str(photos), "-o", str(out), "-k", "3", "--resume")
    assert other_columns.exit_code == 2 and "--top-k was '1', now '3'" in other_columns.stderr
    (photos / "new.png").write_bytes((SAMPLE_IMAGES / "coffee.png").read_bytes())
    other_model = label(tiny_biased_model, str(photos), "-o", str(out), "--resume")
    assert other_model.exit_code == 2 and "weights are not those of" in other_model.stderr
    assert len(read_csv(out)) == 4


ODD_NAMES = [
    "with, comma.png",
    'say "cheese".png',
    "new\nline.png",
    "ünïcödé 猫.png",
    "tab\tand;semi.png",
]


def test_odd_file_names_round_trip_through_csv_and_pandas(tiny_model: str, tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    paths = copy_photos(tmp_path / "odd", ODD_NAMES)
    out = tmp_path / "labels.csv"
    assert label(tiny_model, str(tmp_path / "odd"), "-o", str(out)).exit_code == 0
    expected = sorted(str(p) for p in paths)
    assert sorted(r["path"] for r in read_csv(out)) == expected
    frame = pandas.read_csv(out, keep_default_na=False)
    assert sorted(frame["path"]) == expected
    jsonl = tmp_path / "labels.jsonl"
    assert label(tiny_model, str(tmp_path / "odd"), "-o", str(jsonl)).exit_code == 0
    assert sorted(json.loads(x)["path"] for x in jsonl.read_text().splitlines()) == expected


def test_resume_drops_a_partial_row_inside_a_quoted_newline(
    tiny_model: str, tmp_path: Path
) -> None:
    copy_photos(tmp_path / "odd", ODD_NAMES)
    full, cut = tmp_path / "full.csv", tmp_path / "cut.csv"
    assert label(tiny_model, str(tmp_path / "odd"), "-o", str(full)).exit_code == 0
    data = full.read_bytes()
    newline_row = data.index(b'"' + str(tmp_path / "odd" / "new").encode())
    cut.write_bytes(data[: newline_row + len(str(tmp_path)) + 10])  # stops inside the quotes
    copy_setup(full, cut)
    assert label(tiny_model, str(tmp_path / "odd"), "-o", str(cut), "--resume").exit_code == 0
    assert_same_rows(read_csv(cut), read_csv(full))


def test_threshold_gives_the_unknown_label(tiny_model: str, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "labels.csv"
    result = label(
        tiny_model,
        str(photos),
        "-o",
        str(out),
        "--threshold",
        "0.999",
        "--unknown-label",
        "not sure",
    )
    assert result.exit_code == 0
    rows = read_csv(out)
    assert all(r["label"] == "not sure" for r in rows)
    assert all(r["best_label"] in LABELS.split(",") for r in rows)
    assert all(float(r["probability"]) < 0.999 for r in rows)
    low = tmp_path / "low.csv"
    assert label(tiny_model, str(photos), "-o", str(low), "--threshold", "0").exit_code == 0
    assert all(r["label"] == r["best_label"] for r in read_csv(low))
    assert label(tiny_model, str(photos), "-o", str(low), "--threshold", "1.5").exit_code == 2


@pytest.mark.parametrize("mode", ["copy", "symlink", "hardlink", "move"])
def test_sort_into_label_folders(tiny_model: str, photos: Path, tmp_path: Path, mode: str) -> None:
    (photos / "sub").mkdir()
    (photos / "sub" / "chelsea.png").write_bytes((SAMPLE_IMAGES / "rocket.jpg").read_bytes())
    before = sorted(p.read_bytes() for p in photos.rglob("*.*"))
    sorted_dir, out = tmp_path / "sorted", tmp_path / "labels.csv"
    result = label(
        tiny_model, str(photos), "-o", str(out), "--sort-into", str(sorted_dir), "--mode", mode
    )
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert len(rows) == 5
    destinations = [Path(r["destination"]) for r in rows]
    assert len(set(destinations)) == 5  # two chelsea.png files: no overwrite
    for row, destination in zip(rows, destinations, strict=True):
        assert destination.parent == sorted_dir / row["label"]
        assert destination.exists()
        assert (Path(row["path"]).exists()) == (mode != "move")
        if mode == "symlink":
            assert destination.is_symlink()
        if mode == "hardlink":
            assert destination.stat().st_ino == Path(row["path"]).stat().st_ino
    assert sorted(p.read_bytes() for p in destinations) == before


def test_dry_run_touches_nothing(tiny_model: str, photos: Path, tmp_path: Path) -> None:
    copy_photos(photos, ["a.png", "b.png"])
    out = tmp_path / "plan.csv"
    result = label(
        tiny_model,
        str(photos),
        "-o",
        str(out),
        "--sort-into",
        str(tmp_path / "s"),
        "--mode",
        "move",
        "--dry-run",
    )
    assert result.exit_code == 0
    planned = [r["planned_destination"] for r in read_csv(out)]
    assert len(set(planned)) == len(planned) == 6
    assert not (tmp_path / "s").exists() and len(list(photos.iterdir())) == 6


def test_move_carries_on_after_a_kill_between_row_and_move(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    sorted_dir, out = tmp_path / "sorted", tmp_path / "labels.csv"
    args = ["-o", str(out), "--sort-into", str(sorted_dir), "--mode", "move"]
    assert label(tiny_model, str(photos), *args).exit_code == 0
    rows = read_csv(out)
    # Put the last file back as if the process died after writing its row but before moving it.
    last = rows[-1]
    os.rename(last["destination"], last["path"])
    result = label(tiny_model, str(photos), *args, "--resume")
    assert result.exit_code == 0, result.output
    assert_same_rows(read_csv(out), rows)
    assert Path(last["destination"]).exists() and not Path(last["path"]).exists()


def test_sort_folder_inside_the_input_is_not_labeled_again(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "labels.csv"
    args = ["-o", str(out), "--sort-into", str(photos / "sorted"), "--mode", "move"]
    assert label(tiny_model, str(photos), *args).exit_code == 0
    (photos / "late.png").write_bytes((SAMPLE_IMAGES / "coffee.png").read_bytes())
    assert label(tiny_model, str(photos), *args, "--resume").exit_code == 0
    assert sorted(Path(r["path"]).name for r in read_csv(out)) == [
        "astronaut.png",
        "chelsea.png",
        "coffee.png",
        "late.png",
        "rocket.jpg",
    ]


def test_label_names_become_safe_folder_names() -> None:
    assert safe_folder_name("cat") == "cat"
    assert safe_folder_name("a/b\\c:d*e?") == "a_b_c_d_e_"
    assert safe_folder_name("..") == "_" and safe_folder_name("  ") == "_"
    assert safe_folder_name("CON") == "_CON"
    assert safe_folder_name("x" * 300) == "x" * 120


@pytest.mark.parametrize("option", [("--mode", "move"), ("--mode", "copy"), ("--dry-run",)])
def test_sort_options_need_sort_into(
    tiny_model: str, photos: Path, tmp_path: Path, option: tuple[str, ...]
) -> None:
    result = label(tiny_model, str(photos), "-o", str(tmp_path / "x.csv"), *option)
    assert result.exit_code == 2 and "need --sort-into" in result.stderr  # even the default
    assert not (tmp_path / "x.csv").exists()


def make_many_images(folder: Path, count: int) -> None:
    folder.mkdir()
    big = folder / "000.jpg"
    Image.effect_noise((1200, 900), 64).convert("RGB").save(big, quality=90)
    for i in range(1, count):
        os.link(big, folder / f"{i:03d}.jpg")


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_resume_finishes(tiny_model: str, tmp_path: Path) -> None:
    make_many_images(tmp_path / "many", 150)
    out = tmp_path / "labels.csv"
    command = [
        sys.executable,
        "-m",
        "clipcls",
        "label",
        str(tmp_path / "many"),
        "-o",
        str(out),
        "--labels",
        LABELS,
        "--model",
        tiny_model,
        "--templates",
        "photo",
        "--batch-size",
        "2",
    ]
    env = {**os.environ, "CLIPCLS_CACHE_DIR": str(tmp_path / "cache")}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 10):
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "--resume" in stderr and "holds only complete rows" in stderr
    partial = read_csv(out)
    assert 9 <= len(partial) < 150
    assert out.read_bytes().endswith(b"\n") and b"\r" not in out.read_bytes()
    finished = subprocess.run(
        [*command, "--resume"], capture_output=True, text=True, env=env, timeout=300
    )
    assert finished.returncode == 0, finished.stderr
    rows = read_csv(out)
    assert [Path(r["path"]).name for r in rows] == [f"{i:03d}.jpg" for i in range(150)]
    assert rows[: len(partial)] == partial
    labels = {r["label"] for r in rows}
    assert len(labels) == 1  # 150 identical images get one label, resumed or not
