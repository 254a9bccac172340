"""The ONNX runtime: an export folder answers as its source model does (probabilities within
1e-4, the same top-1 on the sample photos) with no torch in the process; `--runtime auto`
finds a prepared export; a damaged folder is one line and exit 2, nothing written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_IMAGES, clipcls_process, jsonl

from clipcls.backends.base import BackendConfig, Hooks
from clipcls.backends.local import LocalBackend
from clipcls.cache import EmbeddingCache
from clipcls.engine.factory import open_model
from clipcls.engine.onnx_folder import MANIFEST, prepared_folder, write_manifest
from clipcls.engine.onnx_sessions import OPTIMIZED
from clipcls.engine.runtimes import choose_runtime, expected_identity
from clipcls.errors import UnusableExport, UsageError
from clipcls.settings import ModelSettings

LABELS = "cat,coffee,rocket,astronaut,flower"
PHOTOS = sorted(str(p) for p in SAMPLE_IMAGES.iterdir() if p.suffix in (".png", ".jpg"))


def predict(model: str, *extra: str) -> tuple[list[dict], bool, str]:
    out, torch, err = clipcls_process(
        "predict", *PHOTOS, "--labels", LABELS, "--model", model, "-f", "jsonl", *extra
    )
    return jsonl(out), torch, err


def probabilities(rows: list[dict]) -> dict[str, dict[str, float]]:
    return {row["path"]: {s["label"]: s["probability"] for s in row["predictions"]} for row in rows}


def assert_same_answers(onnx_rows: list[dict], torch_rows: list[dict]) -> None:
    ours, theirs = probabilities(onnx_rows), probabilities(torch_rows)
    assert ours.keys() == theirs.keys() and len(ours) == len(PHOTOS)
    for path, scores in ours.items():
        assert scores.keys() == theirs[path].keys()
        worst = max(abs(scores[label] - theirs[path][label]) for label in scores)
        assert worst <= 1e-4, (path, worst)
        assert max(scores, key=scores.__getitem__) == max(
            theirs[path], key=theirs[path].__getitem__
        )


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_an_export_answers_as_its_source_with_no_torch_imported(
    which: str, onnx_tiny_dir: Path, onnx_tiny_siglip_dir: Path, tiny_model: str, tiny_siglip: str
) -> None:
    export, source = {
        "clip": (onnx_tiny_dir, tiny_model),
        "siglip": (onnx_tiny_siglip_dir, tiny_siglip),
    }[which]
    onnx_rows, torch_imported, _ = predict(f"local-dir:{export}")
    assert not torch_imported
    torch_rows, torch_imported, _ = predict(source, "--runtime", "torch", "--precision", "fp32")
    assert torch_imported
    assert_same_answers(onnx_rows, torch_rows)


def test_embeddings_match_the_torch_model_and_are_keyed_apart(
    onnx_tiny_dir: Path, tiny_model: str
) -> None:
    onnx = open_model(ModelSettings(f"local-dir:{onnx_tiny_dir}", device="cpu"))
    torch = open_model(ModelSettings(tiny_model, device="cpu", precision="fp32", runtime="torch"))
    texts = ["a photo of a cat.", "", "x " * 200, "[/b] =cmd()\r\n", "cafe\u0301 crème"]
    assert np.abs(onnx.encode_texts(texts) - torch.encode_texts(texts)).max() <= 1e-4
    from PIL import Image

    images = [Image.open(path).convert("RGB") for path in PHOTOS[:4]]
    ours = onnx.encode_prepared([onnx.prepare(image) for image in images])
    theirs = torch.encode_prepared([torch.prepare(image) for image in images])
    assert np.abs(ours - theirs).max() <= 1e-4
    assert onnx.weights.startswith("onnx:sha256:") and onnx.weights != torch.weights
    assert onnx.plan.image_cache_key != torch.plan.image_cache_key
    assert onnx.plan.text_cache_key != torch.plan.text_cache_key
    assert onnx.info.runtime == "onnx" and torch.info.runtime == "torch"
    assert (onnx.logit_scale, onnx.logit_bias) == pytest.approx((torch.logit_scale, None))


def test_every_model_command_runs_an_export_without_torch(
    onnx_tiny_dir: Path, tmp_path: Path
) -> None:
    model = f"local-dir:{onnx_tiny_dir}"
    folders = tmp_path / "classes"
    for name, photo in (("cat", "chelsea.png"), ("rocket", "rocket.jpg")):
        (folders / name).mkdir(parents=True)
        shutil.copy(SAMPLE_IMAGES / photo, folders / name / photo)
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLE_IMAGES, photos, ignore=shutil.ignore_patterns("*.md"))
    out = tmp_path / "out.csv"
    commands = [
        ["label", str(photos), "--labels", LABELS, "-o", str(out), "--model", model],
        ["evaluate", str(folders), "--model", model],
        ["search", str(photos), "a cat", "--model", model],
        ["similar", str(photos / "chelsea.png"), str(photos), "--model", model],
        ["dedupe", str(photos), "--model", model],
    ]
    for command in commands:
        _, torch_imported, err = clipcls_process(*command)
        assert not torch_imported, (command, err)
    assert len(out.read_text().splitlines()) == 1 + len(PHOTOS)


def prepare_in_cache(cache: Path, source: str, export: Path) -> Path:
    """What `clipcls models prepare` leaves: the export under the source's identity."""
    identity = expected_identity(ModelSettings(source, cache_dir=cache))
    assert identity is not None
    folder = prepared_folder(cache, identity)
    shutil.copytree(export, folder)
    return folder


def test_auto_runs_a_prepared_export_where_torch_would_run_fp32_on_the_cpu(
    onnx_tiny_dir: Path, tiny_model: str, isolated_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("clipcls.engine.hardware.cpuinfo_fast_bf16", lambda: False)
    cpu = ModelSettings(tiny_model, device="cpu")
    assert choose_runtime(cpu) == "torch"
    prepare_in_cache(isolated_caches, tiny_model, onnx_tiny_dir)
    assert choose_runtime(cpu) == "onnx"
    assert choose_runtime(ModelSettings(tiny_model, device="cpu", runtime="torch")) == "torch"
    assert choose_runtime(ModelSettings(tiny_model, device="cuda")) == "torch"
    assert choose_runtime(ModelSettings(tiny_model, device="cpu", precision="bf16")) == "torch"
    monkeypatch.setattr("clipcls.engine.hardware.cpuinfo_fast_bf16", lambda: True)
    assert choose_runtime(cpu) == "torch"  # torch's bf16 outruns an fp32 export there
    assert choose_runtime(ModelSettings(tiny_model, device="cpu", precision="fp32")) == "onnx"


def test_a_prepared_export_spares_torch_until_told_otherwise(
    onnx_tiny_dir: Path, tiny_model: str, isolated_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare_in_cache(isolated_caches, tiny_model, onnx_tiny_dir)
    fp32_cpu = ("--device", "cpu", "--precision", "fp32")
    rows, torch_imported, _ = predict(tiny_model, *fp32_cpu)
    assert not torch_imported and len(rows) == len(PHOTOS)
    # --no-cache: a fully cached run answers from the cache with no model at all
    _, torch_imported, _ = predict(tiny_model, *fp32_cpu, "--runtime", "torch", "--no-cache")
    assert torch_imported
    monkeypatch.setenv("CLIPCLS_RUNTIME", "torch")
    _, torch_imported, _ = predict(tiny_model, *fp32_cpu, "--no-cache")
    assert torch_imported


def run_failing(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clipcls", *args], capture_output=True, text=True, timeout=300
    )


def one_line_refusal(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert all(word in lines[0] for word in words), lines[0]


def damaged_copy(export: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    return copy


@pytest.mark.parametrize("damage", ["changed", "missing", "manifest", "foreign-format"])
def test_a_damaged_export_is_one_line_and_nothing_is_written(
    damage: str, onnx_tiny_dir: Path, tmp_path: Path
) -> None:
    folder = damaged_copy(onnx_tiny_dir, tmp_path)
    data = folder / "image.onnx.data"
    if damage == "changed":
        raw = bytearray(data.read_bytes())
        raw[100] ^= 1
        data.write_bytes(bytes(raw))
    elif damage == "missing":
        data.unlink()
    elif damage == "manifest":
        (folder / MANIFEST).write_bytes(b"{not json\xff")
    else:
        manifest = json.loads((folder / MANIFEST).read_text())
        (folder / MANIFEST).write_text(json.dumps({**manifest, "format": "other-9"}))
    out = tmp_path / "out.csv"
    done = run_failing(
        "label",
        str(SAMPLE_IMAGES),
        "--labels",
        "a,b",
        "-o",
        str(out),
        "--model",
        f"local-dir:{folder}",
    )
    one_line_refusal(done, "export")
    assert not out.exists()


def test_an_opset_this_onnxruntime_cannot_run_is_one_line(
    onnx_tiny_dir: Path, tmp_path: Path
) -> None:
    import onnx

    folder = damaged_copy(onnx_tiny_dir, tmp_path)
    graph = onnx.load(str(folder / "image.onnx"), load_external_data=False)
    for entry in graph.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = 99
    onnx.save(graph, str(folder / "image.onnx"))
    manifest = json.loads((folder / MANIFEST).read_text())
    write_manifest(folder, {k: v for k, v in manifest.items() if k not in ("files", "format")})
    with pytest.raises(UnusableExport) as raised:
        open_model(ModelSettings(f"local-dir:{folder}", device="cpu"))
    assert "\n" not in str(raised.value) and "cannot run" in str(raised.value)
    out = tmp_path / "out.csv"
    model = f"local-dir:{folder}"
    done = run_failing("label", str(SAMPLE_IMAGES), "--labels", "a,b", "-o", str(out), "-m", model)
    one_line_refusal(done, "cannot run", "onnxruntime")
    assert not out.exists()


def test_torch_for_an_export_and_onnx_without_one_are_usage_errors(
    onnx_tiny_dir: Path, tiny_model: str
) -> None:
    with pytest.raises(UsageError, match="ONNX export"):
        choose_runtime(ModelSettings(f"local-dir:{onnx_tiny_dir}", runtime="torch"))
    with pytest.raises(UsageError, match="models prepare"):
        open_model(ModelSettings(tiny_model, device="cpu", runtime="onnx"))
    with pytest.raises(UsageError, match="fp32"):
        open_model(ModelSettings(f"local-dir:{onnx_tiny_dir}", precision="fp16"))


def test_the_optimized_graph_is_kept_and_a_damaged_copy_is_set_aside(
    onnx_tiny_dir: Path, isolated_caches: Path
) -> None:
    settings = ModelSettings(f"local-dir:{onnx_tiny_dir}", device="cpu")
    pixels = [np.full((32, 32, 3), 80, np.uint8)]
    first = open_model(settings).encode_prepared(pixels)
    copies = list((isolated_caches / OPTIMIZED).glob("*/image.onnx"))
    assert len(copies) == 1
    assert open_model(settings).encode_prepared(pixels) == pytest.approx(first, abs=1e-6)
    copies[0].write_bytes(b"not a graph")
    assert open_model(settings).encode_prepared(pixels) == pytest.approx(first, abs=1e-6)
    assert not (isolated_caches / OPTIMIZED / ".partial").exists()


def test_a_tip_names_prepare_once_after_torch_ran_on_the_cpu(
    tiny_model: str, isolated_caches: Path
) -> None:
    tips: list[str] = []
    for _ in range(2):
        config = BackendConfig(
            ModelSettings(tiny_model, device="cpu", precision="fp32", runtime="torch"),
            cache=EmbeddingCache(isolated_caches),
            hooks=Hooks(tip=tips.append),
        )
        LocalBackend(config).start()
    assert len(tips) == 1 and f"clipcls models prepare {tiny_model}" in tips[0]


def test_models_cached_lists_an_export_it_ran(
    onnx_tiny_siglip_dir: Path, isolated_caches: Path
) -> None:
    from clipcls.engine.catalog import local_dir_entries

    model = f"local-dir:{onnx_tiny_siglip_dir}"
    open_model(ModelSettings(model, device="cpu"))
    entries = local_dir_entries(ModelSettings(cache_dir=isolated_caches), default="ViT-B-32")
    found = [entry for entry in entries if entry.model == model]
    assert len(found) == 1 and not found[0].gone and found[0].sigmoid


def test_doctor_says_what_the_default_model_runs_on(
    onnx_tiny_dir: Path, tiny_model: str, isolated_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipcls.doctor import doctor_report

    monkeypatch.setattr("clipcls.engine.hardware.gpu_driver_present", lambda: False)
    monkeypatch.setenv("CLIPCLS_MODEL", tiny_model)
    assert "models prepare" in doctor_report().onnx_choice
    prepare_in_cache(isolated_caches, tiny_model, onnx_tiny_dir)
    monkeypatch.setenv("CLIPCLS_PRECISION", "bf16")
    assert "--runtime onnx uses its export" in doctor_report().onnx_choice
    monkeypatch.setenv("CLIPCLS_PRECISION", "fp32")
    assert "runs on ONNX Runtime" in doctor_report().onnx_choice
