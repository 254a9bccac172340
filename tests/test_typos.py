"""Issue 21: typos answered before torch, with a "did you mean"; open_clip's names read as data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clipcls.engine import hardware
from clipcls.engine.names import known_architectures, known_tags
from clipcls.errors import UsageError
from clipcls.settings import Device, Precision

CHILD = """
import json, sys
from typer.testing import CliRunner
from clipcls.cli.commands import app
result = CliRunner().invoke(app, sys.argv[1:])
heavy = [m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules]
print(json.dumps({"code": result.exit_code, "output": result.output, "heavy": heavy}))
"""


def run_child(*args: str) -> dict[str, object]:
    """Run the CLI in a fresh process; its exit code, output and the heavy modules it imported."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_open_clip_names_read_as_data_match_open_clip() -> None:
    import open_clip

    assert known_architectures() == set(open_clip.list_models())
    expected: dict[str, list[str]] = {}
    for arch, tag in open_clip.list_pretrained():
        expected.setdefault(arch, []).append(tag)
    assert {arch: list(tags) for arch, tags in (known_tags() or {}).items()} == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "ViT-B-3"), "unknown model 'ViT-B-3'; did you mean ViT-B-32"),
        (("--model", "vit-b-32"), "unknown model 'vit-b-32'; did you mean ViT-B-32,"),
        (
            ("--pretrained", "datacomp_xl_s13b_b9k"),
            "has no pretrained tag or file 'datacomp_xl_s13b_b9k'; did you mean "
            "datacomp_xl_s13b_b90k",
        ),
        (("--model", "ViT-B-32:openaj"), "did you mean openai?"),
        (("--device", "cpu", "--precision", "fp16"), "fp16 is not supported on the CPU"),
    ],
)
def test_typos_are_answered_without_importing_torch(
    photos: Path, args: tuple[str, ...], message: str
) -> None:
    found = run_child("predict", str(photos), "--labels", "cat,dog", *args)
    assert found["code"] == 2, found
    assert message in str(found["output"]), found
    assert found["heavy"] == [], found


@pytest.mark.skipif(hardware.cuda_absent_reason() is None, reason="a GPU may be here")
def test_device_cuda_without_a_gpu_is_answered_without_importing_torch(photos: Path) -> None:
    found = run_child("predict", str(photos), "--labels", "cat,dog", "--device", "cuda")
    assert found["code"] == 2 and "--device cuda:" in str(found["output"]), found
    assert found["heavy"] == [], found


def test_a_known_tag_in_another_case_passes_the_early_check(photos: Path) -> None:
    # open_clip looks tags up lower-cased with - as _: the early check must not refuse them.
    from clipcls.engine.sources import check_model_name
    from clipcls.settings import ModelSettings

    check_model_name(ModelSettings("ViT-B-32", "DATACOMP-XL-s13b-b90k"))
    check_model_name(ModelSettings("ViT-B-32-quickgelu", "metaclip_400m"))


def test_no_driver_means_no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    build = {"__version__": "2.9.0+cu128", "cuda": "12.8", "hip": None}
    monkeypatch.setattr(hardware, "_torch_build", lambda: build)
    monkeypatch.setattr(hardware.sys, "platform", "linux")
    monkeypatch.setattr(hardware, "gpu_driver_present", lambda: False)
    with pytest.raises(UsageError, match="no GPU is visible"):
        hardware.check_device_early(Device.CUDA, Precision.AUTO)
    with pytest.raises(UsageError, match="fp16 is not supported on the CPU"):
        hardware.check_device_early(Device.AUTO, Precision.FP16)
    monkeypatch.setattr(hardware, "gpu_driver_present", lambda: True)
    hardware.check_device_early(Device.CUDA, Precision.FP16)  # a driver: torch decides
    monkeypatch.setattr(hardware, "_torch_build", lambda: {**build, "cuda": None})
    with pytest.raises(UsageError, match="CPU-only build"):
        hardware.check_device_early(Device.CUDA, Precision.AUTO)
    monkeypatch.setattr(hardware, "_torch_build", lambda: {**build, "hip": "6.2"})
    monkeypatch.setattr(hardware, "gpu_driver_present", lambda: False)
    hardware.check_device_early(Device.CUDA, Precision.AUTO)  # ROCm: torch decides
    monkeypatch.setattr(hardware.sys, "platform", "darwin")
    hardware.check_device_early(Device.AUTO, Precision.FP16)  # MPS may take it: torch decides


def test_torch_build_read_as_data_matches_torch() -> None:
    import torch

    build = hardware._torch_build()
    assert build is not None
    assert (build["__version__"], build["cuda"]) == (torch.__version__, torch.version.cuda)
