"""Issue 36, part 7: a default model and precision from $CLIPCLS_MODEL/$CLIPCLS_PRECISION and a
config file (command line > environment > file > built-in), `clipcls config`, and a bad value
said in one line that names the variable or the file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, SAMPLE_IMAGES, class_folders
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from clipcls.cli.commands import app
from clipcls.errors import UsageError
from clipcls.userconfig import (
    BUILT_IN,
    change_setting,
    config_path,
    parse_config,
    quoted,
    user_defaults,
)

CAT = str(SAMPLE_IMAGES / "chelsea.png")


def toml(text: str) -> dict[str, Any]:
    """What a TOML reader makes of text (tomllib: Python 3.11 and later)."""
    loads: Any = pytest.importorskip("tomllib").loads
    return dict(loads(text))


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The config file clipcls reads, named by $CLIPCLS_CONFIG (not made yet)."""
    path = tmp_path / "conf" / "config.toml"
    monkeypatch.setenv("CLIPCLS_CONFIG", str(path))
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def one_line_error(stderr: str, *parts: str) -> None:
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    for part in parts:
        assert part in stderr, (part, stderr)


def test_the_file_lies_where_the_platform_keeps_config(monkeypatch: pytest.MonkeyPatch) -> None:
    home = Path.home()
    monkeypatch.setattr(sys, "platform", "linux")
    assert config_path({"XDG_CONFIG_HOME": "/x/conf"}) == (
        Path("/x/conf/clipcls/config.toml"),
        "$XDG_CONFIG_HOME",
    )
    # a relative $XDG_CONFIG_HOME is ignored, as the XDG spec says
    assert config_path({"XDG_CONFIG_HOME": "rel"})[0] == home / ".config/clipcls/config.toml"
    assert config_path({"CLIPCLS_CONFIG": "~/c.toml", "XDG_CONFIG_HOME": "/x"}) == (
        home / "c.toml",
        "$CLIPCLS_CONFIG",
    )
    monkeypatch.setattr(sys, "platform", "darwin")
    assert config_path({})[0] == home / "Library/Application Support/clipcls/config.toml"
    monkeypatch.setattr(sys, "platform", "win32")
    assert config_path({"APPDATA": "/appdata"})[0] == Path("/appdata/clipcls/config.toml")


def test_command_line_beats_environment_beats_file_beats_built_in(
    config: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: str, tiny_biased_model: str
) -> None:
    assert [(s.key, s.value, s.source) for s in user_defaults().settings] == [
        ("model", "ViT-B-32", BUILT_IN),
        ("precision", "auto", BUILT_IN),
        ("runtime", "auto", BUILT_IN),
    ]
    config.parent.mkdir()
    config.write_text(f'model = "{tiny_model}"\nprecision = "fp32"  # a comment\n')
    code, _, err = run("predict", CAT, "-l", "cat,dog")
    assert code == 0, err
    assert f"model {tiny_model} on cpu, fp32" in err
    monkeypatch.setenv("CLIPCLS_MODEL", tiny_biased_model)
    monkeypatch.setenv("CLIPCLS_PRECISION", "bf16")
    monkeypatch.setenv("CLIPCLS_RUNTIME", "torch")
    code, _, err = run("predict", CAT, "-l", "cat,dog")
    assert code == 0, err
    assert f"model {tiny_biased_model} on cpu, bf16" in err
    code, _, err = run("predict", CAT, "-l", "cat,dog", "-m", tiny_model, "--precision", "fp32")
    assert code == 0, err
    assert f"model {tiny_model} on cpu, fp32" in err
    found = user_defaults()
    sources = ["$CLIPCLS_MODEL", "$CLIPCLS_PRECISION", "$CLIPCLS_RUNTIME"]
    assert [s.source for s in found.settings] == sources


def test_config_shows_the_file_each_setting_and_its_source(config: Path) -> None:
    config.parent.mkdir()
    config.write_text('# mine\nprecision = "fp32"\n')
    code, out, err = run("config")
    assert code == 0, err
    assert f"config file: {config} ($CLIPCLS_CONFIG)" in err
    assert out.splitlines() == [
        f"model      ViT-B-32  ({BUILT_IN})",
        "precision  fp32  (config file, line 2)",
        f"runtime    auto  ({BUILT_IN})",
    ]
    config.write_text('model = "ViT-B-3"\n')
    code, _, err = run("predict", CAT, "-l", "cat,dog")
    assert code == 2
    one_line_error(err, f"(the model is set in config file {config}, line 1)")


def test_help_says_where_the_default_comes_from() -> None:
    for command in ("predict", "label", "search", "dedupe", "serve", "evaluate"):
        code, out, _ = run(command, "--help")
        assert code == 0
        assert "$CLIPCLS_MODEL" in out and "$CLIPCLS_PRECISION" in out, command


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("model = ViT-B-32\n", 'line 1: expected key = "value"'),
        ("[clipcls]\nmodel = 'x'\n", "line 1: expected"),
        ('precision = "fp8"\n', "line 1: precision must be one of auto, fp32, bf16, fp16"),
        ('modle = "ViT-B-32"\n', "unknown setting 'modle'; did you mean model?"),
        ('model = "a"\nmodel = "b"\n', "line 2: model is set twice (first on line 1)"),
        ('model = "bad\\qescape"\n', "unknown escape \\q"),
        ('model = ""\n', "model must not be empty"),
        ('model = "two\\nlines"\n', "model must be one line of text"),
        ('model = "x"\r\rprecision = "fp32"\n', "line 1: expected"),
        ('model = "=cmd()" [/b]\n', "line 1: expected"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_and_line(
    config: Path, text: str, says: str
) -> None:
    config.parent.mkdir()
    config.write_text(text, newline="")
    code, _, err = run("predict", CAT, "-l", "cat,dog")
    assert code == 2
    one_line_error(err, f"config file {config}, line", says)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'model = "caf\xe9"\n', "is not UTF-8 text (byte 12)"),
        (b"x" * (64 * 1024 + 1), "is larger than 64 KiB"),
    ],
)
def test_bytes_that_are_no_config(config: Path, content: bytes, says: str) -> None:
    config.parent.mkdir()
    config.write_bytes(content)
    code, _, err = run("config")
    assert code == 2
    one_line_error(err, f"config file {config} {says}")


def test_a_bad_variable_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPCLS_PRECISION", "FP16")
    code, _, err = run("predict", CAT, "-l", "cat,dog")
    assert code == 2
    one_line_error(err, "$CLIPCLS_PRECISION must be one of auto, fp32, bf16, fp16, not 'FP16'")
    monkeypatch.delenv("CLIPCLS_PRECISION")
    monkeypatch.setenv("CLIPCLS_MODEL", "ViT-B-3")
    code, _, err = run("predict", CAT, "-l", "cat,dog")
    assert code == 2
    one_line_error(err, "did you mean ViT-B-32", "(the model is set in $CLIPCLS_MODEL)")


def test_a_broken_file_does_not_matter_when_the_options_are_given(
    config: Path, tiny_model: str
) -> None:
    config.parent.mkdir()
    config.write_bytes(b"\xff\xfe garbage")
    given = ("-m", tiny_model, "--precision", "fp32", "--runtime", "torch")
    code, _, err = run("predict", CAT, "-l", "cat,dog", *given)
    assert code == 0, err
    # doctor reports it rather than dying of it
    code, out, _ = run("doctor")
    assert code == 0
    assert "error: config file" in out and "is not UTF-8 text" in out


def test_a_file_that_is_no_regular_file_is_refused_without_hanging(config: Path) -> None:
    """A FIFO would block a plain open() forever: a whole process, with a hang guard."""
    config.parent.mkdir()
    os.mkfifo(config)
    done = subprocess.run(
        [sys.executable, "-m", "clipcls", "config"],
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard, not a speed claim
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 2
    one_line_error(done.stderr, f"config file {config} is a FIFO, not a regular file")
    config.unlink()
    config.symlink_to("/dev/zero")
    code, _, err = run("config")
    assert code == 2
    one_line_error(err, "is a device, not a regular file")
    config.unlink()
    config.mkdir()
    code, _, err = run("config")
    one_line_error(err, f"cannot read config file {config}: Is a directory")


def test_a_symlinked_dotfile_is_read_and_written_through(config: Path, tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles" / "clipcls.toml"
    dotfiles.parent.mkdir()
    dotfiles.write_text('# kept\nprecision = "bf16"\n')
    config.parent.mkdir()
    config.symlink_to(dotfiles)
    assert user_defaults().precision.value == "bf16"
    code, _, err = run("config", "set", "precision", "fp32")
    assert code == 0, err
    assert config.is_symlink()
    assert dotfiles.read_text() == '# kept\nprecision = "fp32"\n'
    assert [p.name for p in dotfiles.parent.iterdir()] == ["clipcls.toml"]  # no lock, no temp


def test_set_and_unset_keep_other_lines_and_write_a_file_toml_reads(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: str
) -> None:
    code, _, err = run("config", "set", "precision", "fp32")
    assert code == 0, err
    assert f"precision set in {config}" in err
    folder = tiny_model.removeprefix("local-dir:")
    monkeypatch.chdir(Path(folder).parent)
    code, _, err = run("config", "set", "model", f"local-dir:./{Path(folder).name}")
    assert code == 0, err
    text = config.read_text()
    assert toml(text) == {"precision": "fp32", "model": tiny_model}  # made absolute
    assert text.startswith("# clipcls settings")
    monkeypatch.setenv("CLIPCLS_PRECISION", "bf16")
    code, _, err = run("config", "unset", "precision")
    assert code == 0
    assert "$CLIPCLS_PRECISION is set, and wins over the file" in err
    assert toml(config.read_text()) == {"model": tiny_model}
    code, _, err = run("config", "set", "model", "ViT-B-3")
    one_line_error(err, "did you mean ViT-B-32")
    code, _, err = run("config", "set", "colour", "red")
    one_line_error(err, "unknown setting 'colour'")
    config.write_text("[table]\n")
    code, _, err = run("config", "set", "precision", "fp32")
    assert code == 2 and config.read_text() == "[table]\n"  # refused, not overwritten


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1).filter(lambda v: v.strip()))
def test_every_written_value_reads_back_alike_here_and_in_tomllib(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return
    text = f"# c\nprecision = 'fp32'\nmodel = {quoted(value)}  # why\n"
    assert toml(text)["model"] == value
    try:
        assert parse_config(text, "f")["model"] == (value, 3)
    except UsageError as error:
        assert "one line of text" in str(error)  # control characters: not a model name


WRITER = textwrap.dedent(
    """
    import sys
    from clipcls.userconfig import change_setting
    key, values = sys.argv[1], sys.argv[2:]
    for i in range(25):
        change_setting(key, values[i % len(values)])
    """
)


def test_two_processes_writing_at_once_both_land(config: Path) -> None:
    """A lock around read-change-write: without it one process's change is lost."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, *args], env=env)
        for args in (("model", "ViT-B-16", "ViT-B-32"), ("precision", "bf16", "fp32"))
    ]
    seen = 0
    while any(w.poll() is None for w in writers):
        if config.exists():  # a reader never sees a half-written file
            parse_config(config.read_text(), str(config))
            seen += 1
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    # each wrote 25 times, its last value the first of its two
    found = parse_config(config.read_text(), str(config))
    assert {key: value for key, (value, _) in found.items()} == {
        "model": "ViT-B-16",
        "precision": "bf16",
    }
    assert not [p for p in config.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_value_not_utf8_from_the_command_line_is_refused(config: Path) -> None:
    with pytest.raises(UsageError, match="must be UTF-8 text"):
        change_setting("model", "local-dir:/x/\udcff")
    assert not config.exists()


def test_every_command_that_takes_a_model_honours_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model: str
) -> None:
    monkeypatch.setenv("CLIPCLS_MODEL", tiny_model)
    monkeypatch.setenv("CLIPCLS_PRECISION", "fp32")
    images = str(SAMPLE_IMAGES)
    dataset = class_folders(tmp_path / "dataset")
    for args in (
        ["label", images, "-l", "cat,dog", "-o", str(tmp_path / "out.csv")],
        ["evaluate", str(dataset)],
        ["search", images, "a cat", "-f", "csv"],
        ["similar", CAT, images, "-f", "csv"],
        ["dedupe", images, "-f", "csv"],
    ):
        code, _, err = run(*args, "--no-cache")
        assert code == 0, (args, err)
        assert f"model {tiny_model} on cpu, fp32" in err, args
