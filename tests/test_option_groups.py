"""Issue 22, item 6: the shared option groups reach a command as dataclasses holding what was
given, and every command still lists (in --help) each option of the groups it takes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from clipcls.cli.commands import app
from clipcls.cli.model_options import MODEL, model_options, model_settings
from clipcls.cli.option_groups import (
    LABELS,
    RUN,
    SCALE,
    LabelChoice,
    RunOptions,
    ScaleOptions,
    labels_choice,
    run_options,
    scale_options,
)
from clipcls.settings import BackendName, Device, ModelSettings


def probe_app(seen: dict[str, Any], **scale: Any) -> typer.Typer:
    """A one-command app taking every group, which keeps what it read back in seen."""
    probe = typer.Typer()

    @probe.command()
    @model_options()
    @RUN.options()
    @SCALE.options(**scale)
    @LABELS.options()
    def classify(ctx: typer.Context, paths: list[str]) -> None:
        seen.update(
            paths=paths,
            labels=labels_choice(ctx),
            scale=scale_options(ctx),
            run=run_options(ctx),
            model=model_settings(ctx),
        )

    return probe


def test_each_group_reads_back_what_was_given(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}
    args = ["a.jpg", "--labels", "cat,dog", "--template", "a {}.", "--engine", "ray"]
    args += ["--ray-address", "auto", "--ray-actors", "3", "--server", "http://h:1"]
    args += ["--batch-size", "8", "--no-cache", "-q", "--include-hidden", "--strict", "--debug"]
    args += ["-m", "ViT-B-16", "--device", "cpu", "--workers", "2", "--cache-dir", str(tmp_path)]
    result = CliRunner().invoke(probe_app(seen), args)
    assert result.exit_code == 0, result.output
    assert seen["paths"] == ["a.jpg"]
    choice = seen["labels"]
    assert isinstance(choice, LabelChoice)
    assert [label.name for label in choice.labels] == ["cat", "dog"]
    assert choice.templates.templates == ("a {}.",)
    assert seen["scale"] == ScaleOptions(BackendName.RAY, "auto", 3, "http://h:1", 8, True)
    assert seen["run"] == RunOptions(quiet=True, include_hidden=True, strict=True, debug=True)
    assert seen["model"] == ModelSettings(
        "ViT-B-16", device=Device.CPU, workers=2, cache_dir=tmp_path
    )


def test_defaults_and_skipped_options_read_back_as_defaults(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}
    probe = probe_app(seen, only=("batch_size",))
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    result = CliRunner().invoke(probe, ["a.jpg", "--labels-file", str(tmp_path / "labels.txt")])
    assert result.exit_code == 0, result.output
    assert seen["scale"] == ScaleOptions()
    assert seen["run"] == RunOptions()
    # --cache-dir reads $CLIPCLS_CACHE_DIR, which the isolated_caches fixture sets
    assert replace(seen["model"], cache_dir=None) == ModelSettings()
    assert [label.name for label in seen["labels"].labels] == ["cat", "dog"]
    assert seen["labels"].templates.name == "openai"
    refused = CliRunner().invoke(probe, ["a.jpg", "--labels", "a,b", "--engine", "ray"])
    assert refused.exit_code == 2  # not given to this command: no such option


def test_a_group_read_runs_its_checks() -> None:
    seen: dict[str, Any] = {}
    result = CliRunner().invoke(probe_app(seen), ["a.jpg"])  # neither --labels nor a file
    assert result.exit_code == 1
    assert "give exactly one of --labels or --labels-file" in str(result.exception)


PREDICT_SCALE = {"server", "batch_size", "no_cache", "from_embeddings"}
TAKES = {
    "predict": [*LABELS.specs, *PREDICT_SCALE, *RUN.specs, *MODEL.specs],
    "label": [*LABELS.specs, *SCALE.specs, *RUN.specs, *MODEL.specs],
    "evaluate": [*SCALE.specs, *RUN.specs, *(set(MODEL.specs) - {"model"})],
}


@pytest.mark.parametrize("name", sorted(TAKES))
def test_help_lists_every_group_option(name: str) -> None:
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    declared = {param.name: param.opts[0] for param in command.params}
    assert set(TAKES[name]) <= set(declared)
    if name == "predict":
        assert not (set(SCALE.specs) - PREDICT_SCALE) & set(declared)
    shown = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    for option in TAKES[name]:
        assert f" {declared[option]} " in shown.stdout, option
