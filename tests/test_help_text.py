"""Issue 21: every command's --help keeps every word its help strings say, lists only the
formats the command writes, prints its examples once, and typos of commands get a suggestion."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from rich.errors import StyleSyntaxError
from rich.style import Style
from rich.text import Text
from typer.testing import CliRunner

from clipcls.cli.commands import app

BRACKETED = re.compile(r"(?<!\\)\[([^\[\]]+)\]")


def commands() -> Iterator[tuple[list[str], Any]]:
    """Every command and subcommand of the app, with the words that reach it."""
    pending: list[tuple[list[str], Any]] = [([], typer.main.get_command(app))]
    while pending:
        path, command = pending.pop()
        yield path, command
        if hasattr(command, "commands"):  # a group
            pending.extend((path + [name], sub) for name, sub in command.commands.items())


def raw_texts(command: Any) -> list[str]:
    texts = [command.help or "", command.epilog or ""]
    return texts + [getattr(param, "help", None) or "" for param in command.params]


def is_markup(word: str) -> bool:
    """[bold], [/bold], [dim red]: a tag rich reads as a style, not text to show."""
    if word.startswith("/"):
        return True
    try:
        Style.parse(word)
    except StyleSyntaxError:
        return False
    return True


def flat(text: str) -> str:
    """Help as one run of words: panel borders gone, wrapped lines joined."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def render_help(path: list[str], columns: int = 100) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, (path, result.output)
    return flat(result.stdout)


ALL_COMMANDS = sorted((" ".join(path), command) for path, command in commands())


@pytest.mark.parametrize(
    ("name", "command"), ALL_COMMANDS, ids=[n or "clipcls" for n, _ in ALL_COMMANDS]
)
def test_help_keeps_every_bracketed_word(name: str, command: Any) -> None:
    shown = render_help(name.split())
    words = [
        " ".join(found.split())
        for text in raw_texts(command)
        for found in BRACKETED.findall(text)
        if not is_markup(found)
    ]
    missing = [word for word in words if f"[{word}]" not in shown]
    assert not missing, (name, missing)
    examples = flat(Text.from_markup(command.epilog or "").plain)
    # a sentence whose end was eaten ("Cluster to join ."); examples may say `find .`
    assert not re.search(r" \.( |$)", shown.replace(examples, "")), (name, shown)


def test_the_help_walk_sees_every_command() -> None:
    names = {name for name, _ in ALL_COMMANDS}
    assert {"predict", "label", "evaluate", "models export", "cache info"} <= names


def choices_shown(command: str) -> str:
    shown = render_help([command], columns=200)  # wide: the choices on one line
    found = re.search(r"--format -f <([a-z| ]+)>", shown)
    assert found, shown
    return found.group(1).replace(" ", "")


def test_each_format_option_lists_what_its_command_writes() -> None:
    assert choices_shown("predict") == "table|csv|json|jsonl|parquet"
    assert choices_shown("label") == "csv|jsonl|parquet"
    assert choices_shown("evaluate") == "table|json"


@pytest.mark.parametrize(("command", "bad"), [("label", "table"), ("evaluate", "csv")])
def test_a_format_a_command_cannot_write_is_refused_by_the_option(command: str, bad: str) -> None:
    result = CliRunner().invoke(app, [command, ".", "--format", bad])
    assert result.exit_code == 2
    assert "--format" in result.output


@pytest.mark.parametrize(
    ("path", "example"),
    [
        (["models", "export"], "clipcls models export ViT-B-32 --pretrained"),
        (["cache", "clear"], "CACHE_MAX_GB"),
    ],
)
def test_examples_are_printed_once(path: list[str], example: str) -> None:
    shown = render_help(path)
    assert shown.count(example) == 1, shown


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        (["cache", "stats"], "No such command 'stats'. Did you mean 'info'?"),
        (["lable"], "No such command 'lable'. Did you mean 'label'?"),
        (["models", "exprot"], "No such command 'exprot'. Did you mean 'export'?"),
    ],
)
def test_an_unknown_command_gets_a_did_you_mean(args: list[str], suggestion: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert suggestion in result.output
