"""The command line in-process (CliRunner) and as real processes: options, formats, exit codes."""

import csv
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES
from typer.testing import CliRunner

from clipcls.cli import app

runner = CliRunner()


def run(*args: str, stdin: str | None = None):
    return runner.invoke(app, list(args), input=stdin)


def predict(model: str, *args: str, stdin: str | None = None):
    return run("predict", *args, "--model", model, "--templates", "simple", stdin=stdin)


def test_jsonl_has_one_object_per_image_in_input_order(tiny_model: str, photos: Path) -> None:
    result = predict(tiny_model, str(photos), "--labels", "cat,coffee,rocket", "-f", "jsonl")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["path"]).name for r in records] == [
        "astronaut.png",
        "chelsea.png",
        "coffee.png",
        "rocket.jpg",
    ]
    for record in records:
        assert set(record) == {"path", "predictions"}
        ranked = record["predictions"]
        assert [set(p) for p in ranked] == [{"label", "probability", "similarity"}] * 3
        assert [p["probability"] for p in ranked] == sorted(
            (p["probability"] for p in ranked), reverse=True
        )
        assert sum(p["probability"] for p in ranked) == pytest.approx(1.0, abs=1e-6)


def test_unreadable_image_is_an_error_object_and_a_warning(tiny_model: str, photos: Path) -> None:
    (photos / "broken.jpg").write_bytes(b"<html>404</html>")
    result = predict(tiny_model, str(photos), "--labels", "cat,dog", "-f", "jsonl")
    assert result.exit_code == 0
    records = [json.loads(line) for line in result.stdout.splitlines()]
    broken = [r for r in records if r["path"].endswith("broken.jpg")]
    assert len(records) == 5 and set(broken[0]) == {"path", "error"}
    assert "not a readable image" in broken[0]["error"]
    assert "broken.jpg" in result.stderr and "1 of 5 images could not be read" in result.stderr


def test_json_is_the_jsonl_objects_and_stderr_only_names_the_device(
    tiny_model: str, photos: Path
) -> None:
    jsonl = predict(tiny_model, str(photos), "--labels", "cat,dog", "-f", "jsonl")
    as_json = predict(tiny_model, str(photos), "--labels", "cat,dog", "-f", "json").stdout
    assert json.loads(as_json) == [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert jsonl.stderr.count("model local-dir:") == 1
    assert re.search(r"on cpu, (fp32|bf16)\n", jsonl.stderr)


def test_csv_columns_and_top_k(tiny_model: str, photos: Path) -> None:
    result = predict(
        tiny_model, str(photos), "--labels", "cat,dog,car,tree", "-f", "csv", "-k", "3"
    )
    assert result.exit_code == 0
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == [
        "path",
        "label",
        "probability",
        "similarity",
        "label_2",
        "probability_2",
        "label_3",
        "probability_3",
        "error",
    ]
    assert len(rows) == 5
    for row in rows[1:]:
        assert row[1] in {"cat", "dog", "car", "tree"} and 0 < float(row[2]) <= 1
        assert float(row[2]) >= float(row[5]) >= float(row[7])
        assert row[-1] == ""


def test_top_k_is_capped_at_the_number_of_labels(tiny_model: str, photos: Path) -> None:
    result = predict(
        tiny_model, str(photos / "rocket.jpg"), "--labels", "cat,dog", "-k", "10", "-f", "jsonl"
    )
    assert len(json.loads(result.stdout)["predictions"]) == 2


def test_table_shows_each_image_with_its_top_k(tiny_model: str, photos: Path) -> None:
    result = predict(tiny_model, str(photos), "--labels", "cat,dog,rocket", "-k", "2")
    assert result.exit_code == 0
    for name in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"):
        assert name in result.stdout
    assert result.stdout.count("%") == 8  # 4 images x top-2


def test_output_file_gets_results_and_stdout_stays_empty(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"
    result = predict(tiny_model, str(photos), "--labels", "cat,dog", "-f", "csv", "-o", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    assert len(list(csv.DictReader(out.open(newline="")))) == 4


def test_paths_from_stdin(tiny_model: str, photos: Path) -> None:
    listing = f"{photos / 'coffee.png'}\n{photos / 'chelsea.png'}\n"
    result = predict(tiny_model, "-", "--labels", "cat,dog", "-f", "jsonl", stdin=listing)
    assert result.exit_code == 0
    paths = [json.loads(line)["path"] for line in result.stdout.splitlines()]
    assert paths == [str(photos / "coffee.png"), str(photos / "chelsea.png")]


def test_labels_file_with_aliases(tiny_model: str, photos: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("# what is it\ncat: cat | kitten | a tabby cat\nvehicle: car | rocket\n")
    result = predict(tiny_model, str(photos), "--labels-file", str(labels), "-f", "jsonl")
    assert result.exit_code == 0
    first = json.loads(result.stdout.splitlines()[0])
    assert {p["label"] for p in first["predictions"]} == {"cat", "vehicle"}


def test_template_options(tiny_model: str, photos: Path, tmp_path: Path) -> None:
    single = run(
        "predict",
        str(photos),
        "--labels",
        "cat,dog",
        "--model",
        tiny_model,
        "--template",
        "a photo of a {}.",
        "--template",
        "art of a {}.",
        "-f",
        "jsonl",
    )
    assert single.exit_code == 0
    same_as_file = tmp_path / "two.txt"
    same_as_file.write_text("a photo of a {}.\nart of a {}.\n")
    from_file = run(
        "predict",
        str(photos),
        "--labels",
        "cat,dog",
        "--model",
        tiny_model,
        "--templates",
        str(same_as_file),
        "-f",
        "jsonl",
    )
    assert from_file.stdout == single.stdout
    other = run(
        "predict",
        str(photos),
        "--labels",
        "cat,dog",
        "--model",
        tiny_model,
        "--templates",
        "photo",
        "-f",
        "jsonl",
    )
    assert other.stdout != single.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--labels", "cat,,dog"], "empty label at position 2"),
        (["--labels", "cat,dog,cat"], "duplicate label 'cat'"),
        (["--labels", "cat,dog", "--templates", "nope"], "unknown template set 'nope'"),
        (["--labels", "cat,dog", "--template", "a photo"], "has no {} placeholder"),
        ([], "give exactly one of --labels or --labels-file"),
        (["--labels", "cat,dog", "--top-k", "0"], "greater than or equal to 1"),
        (["--labels", "cat,dog", "--format", "xml"], "'xml' is not one of"),
        (
            ["--labels", "cat,dog", "-o", "/nonexistent-dir/out.csv"],
            "--output folder does not exist",
        ),
        (["--labels", "cat,dog", "--device", "tpu"], "'tpu' is not one of"),
        (
            ["--labels", "cat,dog", "--precision", "fp16", "--device", "cpu"],
            "fp16 is not supported on the CPU",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    tiny_model: str, photos: Path, args: list[str], message: str
) -> None:
    result = run("predict", str(photos), "--model", tiny_model, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert result.stdout == ""


def test_template_file_without_placeholder_names_file_and_line(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("a photo of a {}.\nno placeholder here\n")
    result = predict(tiny_model, str(photos), "--labels", "a,b", "--templates", str(bad))
    result = run("predict", str(photos), "--labels", "a,b", "--templates", str(bad))
    assert result.exit_code == 2
    assert f"{bad}:2:" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_input_fails_before_the_model_loads(photos: Path) -> None:
    # The model named here cannot load at all: the input check must come first.
    result = run("predict", str(photos / "nope.jpg"), "--labels", "a,b", "--model", "local-dir:/x")
    assert result.exit_code == 2
    assert "input path does not exist" in result.stderr


def test_empty_folder_is_a_clear_usage_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run("predict", str(tmp_path / "empty"), "--labels", "a,b")
    assert result.exit_code == 2 and "no images found in" in result.stderr


def test_one_label_warns_that_probability_is_always_one(tiny_model: str, photos: Path) -> None:
    result = predict(tiny_model, str(photos / "coffee.png"), "--labels", "coffee", "-f", "jsonl")
    assert result.exit_code == 0 and "always 1.0" in result.stderr
    assert json.loads(result.stdout)["predictions"][0]["probability"] == pytest.approx(1.0)


def test_weights_that_cannot_be_obtained_exit_1_without_traceback(photos: Path) -> None:
    result = run("predict", str(photos), "--labels", "cat,dog", "--offline")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot load weights for ViT-B-32")
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_debug_shows_the_traceback(photos: Path) -> None:
    result = run("predict", str(photos), "--labels", "cat,dog", "--offline", "--debug")
    assert result.exit_code != 0
    from clipcls.errors import ModelLoadError

    assert isinstance(result.exception, ModelLoadError)


def test_cache_dir_option_is_used(photos: Path, tmp_path: Path) -> None:
    result = run(
        "predict",
        str(photos),
        "--labels",
        "cat,dog",
        "--offline",
        "--cache-dir",
        str(tmp_path / "weights"),
    )
    assert str(tmp_path / "weights") in " ".join(result.stderr.split())


def test_models_lists_tags_marks_default_and_filters() -> None:
    result = run("models", "--filter", "ViT-B-32")
    assert result.exit_code == 0
    assert "datacomp_xl_s13b_b90k (default)" in result.stdout
    assert "openai" in result.stdout and "ViT-L-14" not in result.stdout
    assert run("models", "--filter", "no-such-model").exit_code == 2


def test_models_shows_what_is_cached(isolated_caches: Path) -> None:
    # The layout huggingface_hub writes for a downloaded file.
    repo = isolated_caches / "models--laion--CLIP-ViT-B-32-DataComp.XL-s13B-b90K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "open_clip_model.safetensors").write_bytes(b"x")
    result = run("models", "--cached")
    assert result.exit_code == 0
    assert "datacomp_xl_s13b_b90k" in result.stdout and "yes" in result.stdout
    assert "laion2b_s34b_b79k" not in result.stdout


def test_models_export_round_trip(tiny_model: str, tmp_path: Path, photos: Path) -> None:
    folder = tmp_path / "exported"
    result = run("models", "export", tiny_model, str(folder))
    assert result.exit_code == 0, result.output
    original = predict(tiny_model, str(photos), "--labels", "cat,dog", "-f", "jsonl").stdout
    exported = predict(
        f"local-dir:{folder}", str(photos), "--labels", "cat,dog", "-f", "jsonl", "--offline"
    ).stdout
    strip = [json.loads(line)["predictions"] for line in original.splitlines()]
    again = [json.loads(line)["predictions"] for line in exported.splitlines()]
    for a, b in zip(strip, again, strict=True):
        assert [p["label"] for p in a] == [p["label"] for p in b]
        assert [p["probability"] for p in a] == pytest.approx(
            [p["probability"] for p in b], abs=1e-6
        )
    refused = run("models", "export", tiny_model, str(folder))
    assert refused.exit_code == 2 and "not an empty folder" in refused.stderr


def test_templates_command_lists_and_shows() -> None:
    listing = run("templates")
    assert listing.exit_code == 0
    for name in ("openai (default)", "simple", "photo", "satellite", "histology"):
        assert name in listing.stdout
    shown = run("templates", "satellite")
    assert shown.stdout.splitlines()[0] == "a centered satellite photo of {}."
    assert run("templates", "nope").exit_code == 2


def every_command(group=None, path=()):  # type: ignore[no-untyped-def]
    """Every command path of the app, subcommands included, found by walking Click's tree."""
    import typer.main

    group = group or typer.main.get_command(app)
    for name, command in group.commands.items():
        yield (*path, name)
        if hasattr(command, "commands"):
            yield from every_command(command, (*path, name))


def test_every_command_help_has_examples() -> None:
    commands = list(every_command())
    assert (
        len(commands) >= 9
    )  # predict label evaluate templates models(+export) cache(+info, clear)
    for command in commands:
        result = run(*command, "--help")
        assert result.exit_code == 0 and "Examples" in result.stdout, command
        assert f"clipcls {command[0]}" in result.stdout, command


def test_help_shows_the_defaults_that_depend_on_the_machine() -> None:
    for command in ("predict", "label", "evaluate"):
        # Join the help panel's wrapped lines back into one run of words.
        text = " ".join(run(command, "--help").stdout.replace("│", " ").split())
        for default in ("32 on the CPU, 128 on a GPU", "the user cache dir", "from the cores"):
            assert default in text, (command, default)


def test_help_runs_as_a_process_without_importing_torch() -> None:
    code = (
        "import sys, runpy\n"
        "sys.argv = ['clipcls', 'predict', '--help']\n"
        "try:\n    runpy.run_module('clipcls', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "heavy = [m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)
    done = subprocess.run(
        [sys.executable, "-m", "clipcls", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "predict" in done.stdout


@pytest.mark.slow
def test_sample_images_run_end_to_end_as_a_process(tiny_model: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipcls",
            "predict",
            str(SAMPLE_IMAGES),
            "--labels",
            "cat,rocket",
            "--model",
            tiny_model,
            "--templates",
            "photo",
            "--format",
            "jsonl",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "CLIPCLS_CACHE_DIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == len(list(SAMPLE_IMAGES.glob("*.*"))) - 1  # SOURCES.md


def test_batch_size_does_not_change_results(tiny_model: str, photos: Path) -> None:
    one = predict(
        tiny_model, str(photos), "--labels", "cat,dog,car", "-f", "jsonl", "--batch-size", "1"
    )
    three = predict(
        tiny_model, str(photos), "--labels", "cat,dog,car", "-f", "jsonl", "--batch-size", "3"
    )
    for a, b in zip(one.stdout.splitlines(), three.stdout.splitlines(), strict=True):
        got, want = json.loads(a)["predictions"], json.loads(b)["predictions"]
        assert [p["label"] for p in got] == [p["label"] for p in want]
        assert [p["probability"] for p in got] == pytest.approx(
            [p["probability"] for p in want], abs=1e-6
        )


def test_quiet_leaves_stderr_empty(tiny_model: str, photos: Path) -> None:
    result = predict(tiny_model, str(photos), "--labels", "cat,dog", "-f", "jsonl", "-q")
    assert result.exit_code == 0 and result.stderr == ""


def test_hf_hub_models_are_accepted_and_explained_when_unavailable(photos: Path) -> None:
    result = run("predict", str(photos), "--labels", "cat,dog", "--model", "hf-hub:org/some-clip")
    assert result.exit_code == 1
    assert "cannot load weights for hf-hub:org/some-clip" in " ".join(result.stderr.split())
    with_tag = run(
        "predict", str(photos), "--labels", "a,b", "--model", "hf-hub:org/x", "-p", "openai"
    )
    assert with_tag.exit_code == 2 and "--pretrained cannot be used with hf-hub:" in with_tag.stderr


def test_rate_is_steady_from_the_first_update_when_images_come_in_batches() -> None:
    from clipcls.cli.console import SteadyRate

    steady, shown = SteadyRate(), []
    count = 0
    for batch in range(1, 6):  # 32 images a second, delivered once a second after start-up
        for item in range(32):
            count += 1
            rate = steady.update(count, 7.0 + batch + item * 0.001)
            if rate is not None:
                shown.append(rate)
    assert shown and all(28 <= rate <= 36 for rate in shown)


def test_progress_bar_shows_rate_when_stderr_is_a_terminal(monkeypatch) -> None:
    from rich.console import Console

    from clipcls.cli import console as options

    screen = io.StringIO()
    monkeypatch.setattr(options, "stderr", Console(file=screen, force_terminal=True, width=100))

    def slow(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            time.sleep(0.2)
            yield i

    assert list(options.tracked(slow(5), 5, True, "classifying")) == [0, 1, 2, 3, 4]
    rates = [float(rate) for rate in re.findall(r"([\d.]+) img/s", screen.getvalue())]
    assert "classifying" in screen.getvalue() and rates  # 5/s, less a loaded machine's delays
    assert all(4.0 <= rate <= 5.1 for rate in rates), rates
    screen.truncate(0)
    assert list(options.tracked(range(3), 3, False, "classifying")) == [0, 1, 2]
    assert screen.getvalue() == ""


def test_a_long_counted_step_shows_a_bar_a_short_one_the_spinner(monkeypatch) -> None:
    from rich.console import Console

    from clipcls.cli import console as options

    screen = io.StringIO()
    monkeypatch.setattr(options, "stderr", Console(file=screen, force_terminal=True, width=100))
    with options.stderr.status("scoring"), options.counted("embedding prompts", 5000) as advance:
        for _ in range(5):  # nested in a status, as evaluate embeds prompts
            time.sleep(0.2)
            advance(1000)
    rates = [float(rate) for rate in re.findall(r"([\d.]+)/s", screen.getvalue())]
    assert "embedding prompts" in screen.getvalue() and "/5000" in screen.getvalue()
    assert rates and all(2000 <= rate <= 5100 for rate in rates), rates
    screen.seek(0)
    screen.truncate()
    with options.counted("embedding prompts", 240) as advance:
        time.sleep(0.2)
        advance(240)
    assert "embedding prompts (240)" in screen.getvalue() and "/240" not in screen.getvalue()
