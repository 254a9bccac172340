"""Small habits of the command line a user carries from one command to the next: the same
names for the same things (review's --api-key as serve's), one error style (`error: ...`, exit
2, with the command's --help named), and each command's help in its own words."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.output.rows import Columns, Row
from clipcls.output.writers import CsvWriter
from clipcls.prediction import LabelScore

runner = CliRunner()
KEY = "example-key-0123456789"


@pytest.fixture
def output(tmp_path: Path) -> Path:
    out = tmp_path / "out.csv"
    with out.open("w", encoding="utf-8", newline="") as stream:
        writer = CsvWriter(stream, Columns(top_k=1))
        writer.write(Row("a.png", "cat", (LabelScore("cat", 0.9, 0.3),)))
    return out


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--api-key", KEY], {}),
        ([], {"CLIPCLS_REVIEW_API_KEY": KEY}),
        (["--key", KEY], {}),  # the names before, kept working
        ([], {"CLIPCLS_REVIEW_KEY": KEY}),
    ],
)
def test_review_takes_its_token_as_serve_takes_its_key(
    output: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]
) -> None:
    for name in ("CLIPCLS_REVIEW_API_KEY", "CLIPCLS_REVIEW_KEY"):
        monkeypatch.delenv(name, raising=False)
    served: list[str | None] = []
    command = importlib.import_module("clipcls.cli.review")
    monkeypatch.setattr(command, "_serve", lambda table, host, port, key, _: served.append(key))
    done = runner.invoke(app, ["review", str(output), "--host", "0.0.0.0", *args], env=env)
    assert done.exit_code == 0, done.output
    assert served == [KEY]


def test_review_help_names_api_key_and_hides_the_old_name() -> None:
    shown = runner.invoke(app, ["review", "--help"], env={"COLUMNS": "200"}).stdout
    assert "--api-key" in shown and "CLIPCLS_REVIEW_API_KEY" in shown
    assert "--key " not in shown and "CLIPCLS_REVIEW_KEY" not in shown
    serve = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).stdout
    assert "--api-key" in serve and "CLIPCLS_API_KEY" in serve


def test_a_short_api_key_is_refused_before_anything_is_served(output: Path) -> None:
    done = runner.invoke(app, ["review", str(output), "--api-key", "short"])
    assert done.exit_code == 2 and "at least 16 characters" in done.stderr


@pytest.mark.parametrize(
    ("args", "said", "command"),
    [
        (["predict", "x.png", "--labels"], "Option '--labels' requires an argument", "predict"),
        (["evaluate", "--format"], "Option '--format' requires an argument", "evaluate"),
        (["models", "export", "--bogus"], "No such option: --bogus", "models export"),
        (["cache", "clear", "--bogus"], "No such option: --bogus", "cache clear"),
        (["review"], "Missing argument 'OUTPUT'", "review"),
        (["label", "x"], "Missing option '--output' / '-o'", "label"),
        (["frobnicate"], "No such command 'frobnicate'", ""),
    ],
)
def test_usage_errors_are_one_line_naming_the_commands_help(
    args: list[str], said: str, command: str
) -> None:
    # Click's own errors (a value missing after an option included, which Click raises before
    # it knows the command) read as every clipcls error does: one line, exit 2.
    done = runner.invoke(app, args)
    assert done.exit_code == 2 and done.stdout == ""
    where = f"clipcls {command}".strip()
    assert done.stderr == f"error: {said} (see `{where} --help`)\n"
    assert "Error:" not in done.stderr and "Try '" not in done.stderr


@pytest.mark.parametrize(
    ("command", "server", "saved"),
    [
        ("predict", "URL to classify on", "Score the embeddings"),
        ("label", "URL to classify on", "Score the embeddings"),
        ("search", "URL to search with", "Search the embeddings"),
        ("similar", "URL that embeds the images the cache lacks", "Search the embeddings"),
        ("dedupe", "URL that embeds the images the cache lacks", "Group the embeddings"),
    ],
)
def test_shared_options_are_described_in_each_commands_words(
    command: str, server: str, saved: str
) -> None:
    # `search --help` said "URL to classify on" for --server: the words of predict.
    shown = " ".join(runner.invoke(app, [command, "--help"], env={"COLUMNS": "300"}).stdout.split())
    assert server in shown and saved in shown and "$CLIPCLS_API_KEY" in shown
    if command in ("search", "similar", "dedupe"):
        assert "classify" not in shown.lower()


def test_a_reworded_option_still_parses_from_its_flag_and_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLIPCLS_SERVER", "http://127.0.0.1:9")  # nothing listens on port 9
    done = runner.invoke(app, ["search", str(tmp_path), "a cat"])
    assert done.exit_code != 0 and "127.0.0.1:9" in done.stderr  # the variable was read
