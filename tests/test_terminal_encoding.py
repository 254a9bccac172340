"""A stdout that cannot encode a name or a label (PYTHONIOENCODING=ascii, a Latin-1 terminal):
every command finishes, escaping what it cannot write; JSON stays valid and exact, and files
written with -o stay UTF-8, byte for byte what a UTF-8 terminal's run writes."""

import codecs
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.pathtext import ESCAPE_ERRORS

NFD = unicodedata.normalize("NFD", "crème")
LABELS = f"café,猫,{NFD},dog 🐱"
CHARSETS = ("ascii", "latin-1")


@pytest.fixture
def names(tmp_path: Path) -> Path:
    """Photos whose names are not ASCII (and one whose name is not UTF-8)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    sources = ("chelsea.png", "coffee.png", "rocket.jpg", "coffee.png")
    for name, source in zip(
        ("café.png", "猫.png", f"{NFD}.jpg", "plain.png"), sources, strict=True
    ):
        (folder / name).write_bytes((SAMPLE_IMAGES / source).read_bytes())
    (folder / os.fsdecode(b"bad\xff.png")).write_bytes((SAMPLE_IMAGES / "chelsea.png").read_bytes())
    return folder


def invoke(charset: str, *args: str):
    """A run whose stdout encodes like a terminal of that charset, strict as Python makes it
    (stderr escapes, as Python's does)."""
    return CliRunner(charset=charset).invoke(app, list(args))


def model_args(model: str) -> tuple[str, ...]:
    return ("--model", model, "--templates", "simple")


def commands(model: str, names: Path) -> dict[str, tuple[str, ...]]:
    """Every command that writes results to stdout, by the name the tests give it."""
    found = str(names / "猫.png")
    runs = {
        f"predict-{f}": ("predict", str(names), "-l", LABELS, "-f", f, *model_args(model))
        for f in ("table", "csv", "jsonl", "json")
    }
    for f in ("table", "csv", "jsonl", "json"):
        runs[f"search-{f}"] = ("search", str(names), "café 猫", "-f", f, *model_args(model))
        runs[f"similar-{f}"] = ("similar", found, str(names), "-f", f, "--model", model)
        runs[f"dedupe-{f}"] = ("dedupe", str(names), "-f", f, "--model", model)
    return runs


def dataset(root: Path) -> Path:
    """Two class folders whose names are not ASCII."""
    for name, source in (("café", "chelsea.png"), ("猫", "coffee.png"), ("猫", "rocket.jpg")):
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / source).write_bytes((SAMPLE_IMAGES / source).read_bytes())
    return root


RESULT_COMMANDS = [
    f"{c}-{f}"
    for c in ("predict", "search", "similar", "dedupe")
    for f in ("table", "csv", "jsonl", "json")
]


@pytest.mark.parametrize(
    ("which", "charset"),
    [(which, "ascii") for which in RESULT_COMMANDS]
    + [(f"predict-{f}", "latin-1") for f in ("table", "csv", "jsonl")],
)
def test_results_to_a_narrow_stdout_finish_and_json_reads_back_exactly(
    tiny_model: str, names: Path, charset: str, which: str
) -> None:
    args = commands(tiny_model, names)[which]
    wide = invoke("utf-8", *args)
    assert wide.exit_code == 0, wide.output
    narrow = invoke(charset, *args)
    assert narrow.exception is None or isinstance(narrow.exception, SystemExit), narrow.exception
    assert narrow.exit_code == 0, narrow.stderr
    narrow.stdout_bytes.decode(charset)  # only what the terminal can show
    if which.endswith("-jsonl"):
        read = [json.loads(line) for line in narrow.stdout.splitlines()]
        assert read == [json.loads(line) for line in wide.stdout.splitlines()]
    elif which.endswith("-json"):
        assert json.loads(narrow.stdout) == json.loads(wide.stdout)
    elif which.endswith("-csv"):  # what could not be written is escaped as JSON escapes it
        assert narrow.stdout == wide.stdout.encode(charset, ESCAPE_ERRORS).decode(charset)
        assert "\\u" in narrow.stdout
    else:  # a table: ASCII borders, and the same escapes
        assert "\\u" in narrow.stdout and "\\U" not in narrow.stdout
    if charset == "latin-1":
        assert "caf\\u00e9" not in narrow.stdout  # é is Latin-1: written as it is


@pytest.mark.parametrize("charset", CHARSETS)
def test_evaluate_tables_and_json_to_a_narrow_stdout(
    tiny_model: str, tmp_path: Path, charset: str
) -> None:
    root = dataset(tmp_path / "classes")
    table = invoke(charset, "evaluate", str(root), *model_args(tiny_model))
    assert table.exit_code == 0, table.stderr
    table.stdout_bytes.decode(charset)
    wide = invoke("utf-8", "evaluate", str(root), "-f", "json", *model_args(tiny_model))
    narrow = invoke(charset, "evaluate", str(root), "-f", "json", *model_args(tiny_model))
    assert narrow.exit_code == 0, narrow.stderr
    assert json.loads(narrow.stdout) == json.loads(wide.stdout)
    assert json.loads(narrow.stdout)["classes"] == ["café", "猫"]


@pytest.mark.parametrize(
    "args",
    [("templates",), ("templates", "simple"), ("models",), ("models", "--json"), ("cache", "info")],
)
def test_listings_to_an_ascii_stdout(args: tuple[str, ...]) -> None:
    done = invoke("ascii", *args)
    assert done.exit_code == 0, done.stderr
    done.stdout_bytes.decode("ascii")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_file_written_under_an_ascii_stdout_is_the_utf8_runs_byte_for_byte(
    tiny_model: str, names: Path, tmp_path: Path, fmt: str
) -> None:
    files = []
    for charset in ("utf-8", "ascii"):
        out = tmp_path / f"{charset}.{fmt}"
        args = ("label", str(names), "-l", LABELS, "-o", str(out), *model_args(tiny_model))
        done = invoke(charset, *args)
        assert done.exit_code == 0, done.stderr
        files.append(out.read_bytes())
    assert files[0] == files[1]
    text = files[1].decode("utf-8")
    assert "猫" in text and "café" in text and "\\u" not in text


def test_a_label_typed_as_bytes_that_are_not_utf8_is_written_as_its_escape(
    tiny_model: str, names: Path, tmp_path: Path
) -> None:
    """It once reached the writer as a lone surrogate: a traceback, and half a file."""
    label = os.fsdecode(b"bad\xff")
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"out.{fmt}"
        args = ("label", str(names), "-l", f"{label},dog", "-o", str(out), *model_args(tiny_model))
        done = invoke("utf-8", *args)
        assert done.exit_code == 0, done.output
        text = out.read_bytes().decode("utf-8")
        assert "bad\\xff" in (text if fmt == "csv" else json.loads(text.splitlines()[0])["label"])


def test_the_escape_is_json_for_text_and_clean_text_for_undecodable_bytes() -> None:
    text = "café 猫 🐱 " + os.fsdecode(b"\xff")
    written = text.encode("ascii", ESCAPE_ERRORS).decode("ascii")
    assert written == "caf\\u00e9 \\u732b \\ud83d\\udc31 \\xff"
    assert json.loads(f'"{written[:-5]}"') == text[:-2]
    assert codecs.lookup_error(ESCAPE_ERRORS)  # registered once the CLI's modules load


def test_a_real_process_with_an_ascii_stdout(tiny_model: str, names: Path) -> None:
    """Through the console script's own entry (main), not only the Typer app."""
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipcls",
            "predict",
            str(names),
            "-l",
            LABELS,
            "-f",
            "jsonl",
            *model_args(tiny_model),
        ],
        capture_output=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"Traceback" not in done.stderr
    labels = {
        p["label"] for line in done.stdout.splitlines() for p in json.loads(line)["predictions"]
    }
    assert labels == {"café", "猫", unicodedata.normalize("NFC", NFD), "dog 🐱"}


def test_a_warning_on_an_ascii_stderr_never_reads_like_an_undecodable_byte(
    tiny_model: str, names: Path
) -> None:
    broken = names / os.fsdecode("café".encode() + b"\xff.jpg")
    broken.write_bytes(b"not an image")
    done = invoke("ascii", "predict", str(broken), "-l", "a,b", *model_args(tiny_model))
    assert done.exit_code == 0, done.output
    assert "caf\\u00e9\\xff.jpg" in done.stderr  # Python's own would write caf\xe9\xff.jpg
