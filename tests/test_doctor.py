"""Issue 21: `clipcls doctor` and --json on doctor, models and templates."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipcls.cli.commands import app
from clipcls.doctor import (
    CPU_WHEELS,
    DoctorReport,
    TorchFacts,
    cuda_build_advice,
    doctor_report,
    folder_bytes,
)
from clipcls.engine import hardware
from clipcls.prompts import DEFAULT_TEMPLATES, list_template_sets
from clipcls.settings import DEFAULT_MODEL, DEFAULT_PRETRAINED, ModelSettings

SECRET = "s3cret-key-never-printed"
DOCTOR_KEYS = {
    "clipcls_version",
    "python_version",
    "open_clip_version",
    "torch_version",
    "torch_cuda",
    "torch_error",
    "device",
    "device_reason",
    "precision",
    "precision_reason",
    "cache_dir",
    "cache_bytes",
    "onnx_providers",
    "onnx_choice",
    "extras",
    "env",
    "torch_advice",
    "torch_switch",
    "config_file",
    "config_error",
    "defaults",
}


@pytest.fixture(scope="module")
def report() -> DoctorReport:
    return doctor_report()


def test_doctor_report_is_a_frozen_dataclass_with_the_real_versions(report: DoctorReport) -> None:
    import torch

    with pytest.raises(dataclasses.FrozenInstanceError):
        report.device = "cuda"  # type: ignore[misc]
    assert report.torch_version == torch.__version__
    assert report.torch_cuda == torch.version.cuda
    assert report.open_clip_version == importlib.metadata.version("open_clip_torch")
    assert report.device == hardware.pick_device(hardware.Device.AUTO)
    if hardware.cuda_absent_reason() is not None:
        assert report.device == "cpu" and "no CUDA GPU" in report.device_reason


def test_doctor_counts_the_cache_folder(isolated_caches: Path) -> None:
    (isolated_caches / "sub").mkdir(parents=True)
    (isolated_caches / "sub" / "weights.bin").write_bytes(b"x" * 1000)
    (isolated_caches / "embeddings.sqlite").write_bytes(b"y" * 24)
    assert folder_bytes(isolated_caches) == 1024
    assert folder_bytes(isolated_caches / "missing") == 0
    found = doctor_report(ModelSettings(cache_dir=isolated_caches))
    assert (found.cache_dir, found.cache_bytes) == (str(isolated_caches), 1024)


def test_doctor_json_is_the_only_stdout_and_never_shows_the_api_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLIPCLS_API_KEY", SECRET)
    monkeypatch.setenv("CLIPCLS_SERVER", f"http://127.0.0.1:9/?k={SECRET}")
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == DOCTOR_KEYS
    assert document["env"]["CLIPCLS_API_KEY"] == "set"
    assert document["env"]["CLIPCLS_SERVER"] == "set"
    assert set(document["extras"]) == {"parquet", "s3", "ray", "serve", "report", "heif", "onnx"}
    assert document["extras"]["parquet"]["installed"] is True  # pyarrow is a test dependency
    assert SECRET not in result.output


def test_doctor_table_names_each_part(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPCLS_API_KEY", SECRET)
    result = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for row in ("clipcls", "open_clip", "torch", "device", "precision", "cache", "extras"):
        assert f" {row} " in f" {result.stdout}", row
    assert "CLIPCLS_API_KEY set" in result.stdout
    assert SECRET not in result.output


def test_models_json_lists_rows_with_stable_keys() -> None:
    result = CliRunner().invoke(app, ["models", "--json", "--filter", DEFAULT_MODEL])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    keys = {"model", "pretrained", "default", "cached", "sigmoid"}
    assert rows and all(set(row) == keys for row in rows)
    defaults = [row for row in rows if row["default"]]
    assert defaults == [
        {
            "model": DEFAULT_MODEL,
            "pretrained": DEFAULT_PRETRAINED,
            "default": True,
            "cached": False,
            "sigmoid": False,
        }
    ]
    empty = CliRunner().invoke(app, ["models", "--json", "--cached"])
    assert empty.exit_code == 0 and json.loads(empty.stdout) == []


def test_templates_json_lists_every_set_or_one() -> None:
    result = CliRunner().invoke(app, ["templates", "--json"])
    assert result.exit_code == 0, result.output
    sets = json.loads(result.stdout)
    assert [s["name"] for s in sets] == [s.name for s in list_template_sets()]
    assert [s["name"] for s in sets if s["default"]] == [DEFAULT_TEMPLATES]
    one = json.loads(CliRunner().invoke(app, ["templates", "photo", "--json"]).stdout)
    assert set(one) == {"name", "description", "default", "templates"}
    assert all("{}" in template for template in one["templates"])


def test_doctor_reports_a_torch_that_does_not_import(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise OSError("libcudart.so.13: cannot open shared object file")

    monkeypatch.setattr(hardware, "runtime_choice", broken)
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["torch_version"] is None
    assert "libcudart.so.13" in document["torch_error"]


def test_cuda_build_advice_follows_the_torch_facts() -> None:
    """A fake seam: the facts a machine would give, without needing (or lacking) a GPU."""
    no_driver = TorchFacts("12.8", cuda_available=False, driver_present=False, cuda_bytes=4 << 30)
    advice = cuda_build_advice(no_driver)
    assert advice is not None
    assert "CUDA 12.8 build, but no NVIDIA driver is loaded" in advice
    assert "(4.0 GB here)" in advice
    unseen = cuda_build_advice(dataclasses.replace(no_driver, driver_present=True))
    assert unseen is not None and "torch sees no GPU" in unseen
    assert cuda_build_advice(dataclasses.replace(no_driver, cuda_available=True)) is None
    assert cuda_build_advice(dataclasses.replace(no_driver, cuda=None)) is None  # CPU-only


@pytest.mark.parametrize(("device", "advised"), [("cpu", True), ("cuda", False)])
def test_doctor_says_how_to_switch_to_the_cpu_wheels(
    monkeypatch: pytest.MonkeyPatch, device: str, advised: bool
) -> None:
    choice = hardware.RuntimeChoice("2.9.0+cu128", "12.8", device, "why", "fp32", "why")
    monkeypatch.setattr(hardware, "runtime_choice", lambda: choice)
    monkeypatch.setattr(hardware, "gpu_driver_present", lambda: False)
    result = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert ("no NVIDIA driver is loaded" in result.stdout) is advised
    switch = f"to switch to the CPU-only torch: {CPU_WHEELS}\n"
    assert (switch in result.stderr) is advised  # one line: it copies whole
    assert CPU_WHEELS == (
        "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu "
        "--force-reinstall"
    )
    document = json.loads(CliRunner().invoke(app, ["doctor", "--json"]).stdout)
    assert (document["torch_switch"] == CPU_WHEELS) is advised


def test_doctor_lists_the_config_file_and_the_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('precision = "fp32"\n')
    monkeypatch.setenv("CLIPCLS_CONFIG", str(config))
    monkeypatch.setenv("CLIPCLS_MODEL", "ViT-B-16")
    document = json.loads(CliRunner().invoke(app, ["doctor", "--json"]).stdout)
    assert document["config_file"] == f"{config} ($CLIPCLS_CONFIG)"
    assert document["config_error"] is None
    assert document["defaults"] == {
        "model": {"value": "ViT-B-16", "source": "$CLIPCLS_MODEL"},
        "precision": {"value": "fp32", "source": "config file, line 1"},
        "runtime": {"value": "auto", "source": "built-in default"},
    }
    assert document["env"]["CLIPCLS_CONFIG"] == "set"
