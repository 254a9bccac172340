"""`clipcls models export --onnx` and `models prepare`: the folder's manifest as ONNX_SPEC has
it, towers that match torch (checked here again, on inputs of the test's own), and refusals
that leave nothing behind: a used target, an unexportable family, a failed parity gate, a
killed export."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SAMPLE_IMAGES, fp32
from PIL import Image
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.digests import file_digest
from clipcls.engine import onnx_parity, onnx_towers
from clipcls.engine.onnx_export import PARTIAL_PREFIX, PARTIAL_SUFFIX
from clipcls.engine.onnx_folder import MANIFEST, prepared_folder, read_folder
from clipcls.engine.runtimes import choose_runtime
from clipcls.engine.sources import LOCAL_DIR
from clipcls.settings import ModelSettings

ort = pytest.importorskip("onnxruntime")
runner = CliRunner()

SPEC_KEYS = {
    "format", "model", "pretrained", "source_weights", "source_digest", "random_weights",
    "embed_dim", "logit_scale", "logit_bias", "opset", "image", "text", "tokenizer",
    "preprocess", "parity", "exported_with", "files",
}  # fmt: skip


def manifest_of(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / MANIFEST).read_text(encoding="utf-8")))


def source_folder(model: str) -> Path:
    return Path(model.removeprefix(LOCAL_DIR))


def spec_digest(weights: Path) -> str:
    """ONNX_SPEC's source_digest, computed from the source's safetensors file."""
    from safetensors.numpy import load_file

    digest = hashlib.sha256()
    tensors = load_file(str(weights))
    for key in sorted(tensors):
        digest.update(key.encode() + b"\0" + tensors[key].astype("<f4", order="C").tobytes())
    return f"sha256:{digest.hexdigest()}"


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(PARTIAL_PREFIX))


def test_the_manifest_says_what_the_spec_asks(onnx_tiny_dir: Path, tiny_model: str) -> None:
    manifest = manifest_of(onnx_tiny_dir)
    assert set(manifest) == SPEC_KEYS
    assert manifest["format"] == "clipcls-onnx-1" and manifest["opset"] == 18
    assert manifest["model"] == tiny_model and manifest["pretrained"] is None
    assert manifest["source_weights"] == fp32(tiny_model).weights
    source = source_folder(tiny_model) / "open_clip_model.safetensors"
    assert manifest["source_digest"] == spec_digest(source)
    assert manifest["random_weights"] is False  # the fixture's model carries no marker
    assert manifest["embed_dim"] == 32 and manifest["logit_bias"] is None
    assert manifest["text"] == {
        "file": "text.onnx",
        "input": "tokens",
        "output": "features",
        "context_length": 77,
        "cut": True,
        "pool": "argmax",
        "eos_id": None,
    }
    assert manifest["tokenizer"] == {
        "kind": "bpe",
        "file": "bpe_simple_vocab_16e6.txt.gz",
        "context_length": 77,
        "clean": "lower",
        "reduction": None,
    }
    assert manifest["preprocess"]["size"] == [32, 32]
    assert manifest["preprocess"]["resize_mode"] == "shortest"
    on_disk = {p.name for p in onnx_tiny_dir.iterdir()} - {MANIFEST}
    assert on_disk == {"image.onnx", "image.onnx.data", "text.onnx", "text.onnx.data"} | {
        "bpe_simple_vocab_16e6.txt.gz"
    }
    assert manifest["files"] == {name: file_digest(onnx_tiny_dir / name) for name in on_disk}


def test_siglip_keeps_its_fixed_length_and_its_bias(
    onnx_tiny_siglip_dir: Path, tiny_siglip: str
) -> None:
    manifest = manifest_of(onnx_tiny_siglip_dir)
    clip = fp32(tiny_siglip)
    assert manifest["text"]["cut"] is False and manifest["text"]["pool"] == "last"
    assert manifest["text"]["context_length"] == manifest["tokenizer"]["context_length"] == 64
    assert manifest["tokenizer"]["clean"] == "canonicalize"
    assert manifest["logit_bias"] == pytest.approx(clip.logit_bias)
    assert manifest["logit_scale"] == pytest.approx(clip.logit_scale)
    assert manifest["preprocess"]["resize_mode"] == "squash"
    assert manifest["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    session = ort.InferenceSession(str(onnx_tiny_siglip_dir / "text.onnx"))
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # the length is fixed
        session.run(None, {"tokens": np.ones((1, 10), dtype=np.int64)})


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_the_recorded_parity_is_small_and_holds_on_other_inputs(
    which: str, request: pytest.FixtureRequest
) -> None:
    folder = request.getfixturevalue("onnx_tiny_dir" if which == "clip" else "onnx_tiny_siglip_dir")
    model = request.getfixturevalue("tiny_model" if which == "clip" else "tiny_siglip")
    manifest = manifest_of(folder)
    parity = manifest["parity"]
    for key in ("image_max_abs", "image_unit_max_abs", "text_max_abs", "text_unit_max_abs"):
        assert 0 <= parity[key] <= 1e-4
    assert "4 photos" in parity["inputs"] and "prompts" in parity["inputs"]
    # The folder's own towers against clipcls's torch path, on inputs the gate never saw.
    clip = fp32(model)
    prepared = [clip.prepare(Image.open(SAMPLE_IMAGES / n).convert("RGB")) for n in ("china.jpg",)]
    mean = np.asarray(manifest["preprocess"]["mean"], dtype=np.float32)
    std = np.asarray(manifest["preprocess"]["std"], dtype=np.float32)
    pixels = ((np.stack(prepared).astype(np.float32) / 255 - mean) / std).transpose(0, 3, 1, 2)
    image = ort.InferenceSession(str(folder / "image.onnx")).run(None, {"pixels": pixels})[0]
    assert np.abs(unit(image) - clip.encode_prepared(prepared)).max() <= 1e-4
    texts = ["a blurry photo of a teapot", "coins", "the hubble deep field, seen from orbit"]
    tokens = clip.torch_parts()[2](texts).numpy()
    if manifest["text"]["cut"]:
        tokens = tokens[:, : int(tokens.argmax(axis=1).max()) + 1]
    text = ort.InferenceSession(str(folder / "text.onnx")).run(None, {"tokens": tokens})[0]
    assert np.abs(unit(text) - clip.encode_texts(texts)).max() <= 1e-4


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_the_cli_exports_random_weights_and_says_the_figures(tmp_path: Path) -> None:
    folder = tmp_path / "[/b]onnx"
    result = runner.invoke(
        app, ["models", "export", "ViT-B-32", str(folder), "--random", "--tiny", "--onnx"]
    )
    assert result.exit_code == 0, result.output
    assert "parity with torch: max |diff| image" in result.stderr
    assert f"use it with --model local-dir:{folder}" in result.stderr
    assert "RANDOM weights" in result.stderr and result.stdout == ""
    manifest = manifest_of(folder)
    assert manifest["model"] == "ViT-B-32" and manifest["random_weights"] is True
    assert leftovers(tmp_path) == []


def test_prepare_exports_into_the_cache_once(tiny_model: str, tmp_path: Path) -> None:
    cache = tmp_path / "prepared-cache"
    args = ["models", "prepare", tiny_model, "--cache-dir", str(cache)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    folder = prepared_folder(cache, fp32(tiny_model).weights)
    assert manifest_of(folder)["source_weights"] == fp32(tiny_model).weights
    assert str(folder) in first.stderr.replace("\n", "")
    auto = ModelSettings(tiny_model, device="cpu", precision="fp32", cache_dir=cache)
    assert choose_runtime(auto) == "onnx"  # where --runtime auto looks, prepare put it
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "already prepared" in again.stderr
    with (folder / "image.onnx.data").open("ab") as stream:  # damaged since: exported anew
        stream.write(b"\0")
    mended = runner.invoke(app, args)
    assert mended.exit_code == 0 and "already prepared" not in mended.stderr
    assert "parity with torch" in mended.stderr
    read_folder(folder)  # every file matches its manifest again
    assert leftovers(folder.parent) == []


def test_refusals_before_loading(tiny_model: str, onnx_tiny_dir: Path, tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "empty", target_is_directory=True)
    (tmp_path / "empty").mkdir()
    cases = [
        ([tiny_model, str(used)], "exists and is not an empty folder"),
        ([tiny_model, str(link)], "exists and is not an empty folder"),
        ([f"{LOCAL_DIR}{onnx_tiny_dir}", str(tmp_path / "new")], "already is an ONNX export"),
        (["ViT-B-32", str(tmp_path / "new"), "--tiny"], "--tiny only goes with --random"),
    ]
    for args, words in cases:
        result = runner.invoke(app, ["models", "export", *args, "--onnx"])
        assert result.exit_code == 2, result.output
        assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (used / "keep.txt").read_text() == "mine" and not (tmp_path / "new").exists()
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == []


def test_missing_exporter_packages_are_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name)
    )
    result = runner.invoke(app, ["models", "export", "ViT-B-32", str(tmp_path / "x"), "--onnx"])
    assert result.exit_code == 2
    assert "needs onnxscript: pip install 'clipcls[onnx]'" in result.stderr


def test_a_family_the_exporter_cannot_handle_writes_nothing(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import open_clip

    class NotClip:  # the model is no longer the class the exporter knows, as CoCa is not
        pass

    monkeypatch.setattr(open_clip, "CLIP", NotClip)
    target = tmp_path / "out"
    result = runner.invoke(app, ["models", "export", tiny_model, str(target), "--onnx"])
    assert result.exit_code == 2, result.output
    assert "cannot export CLIP to ONNX: only CLIP and CustomTextCLIP" in result.stderr
    assert not target.exists() and leftovers(tmp_path) == []


def test_a_tower_whose_export_raises_writes_nothing(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(self: Any, pixels: Any) -> Any:
        raise NotImplementedError("aten::strange_op has no ONNX symbolic")

    monkeypatch.setattr(onnx_towers.ImageTower, "forward", unsupported)
    target = tmp_path / "out"
    result = runner.invoke(app, ["models", "export", tiny_model, str(target), "--onnx"])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert line.startswith("error: cannot export CLIP to ONNX: its image tower failed")
    assert "strange_op" in line and len(line.splitlines()) == 1
    assert not target.exists() and leftovers(tmp_path) == []


def test_a_failed_parity_gate_writes_nothing(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = onnx_parity._torch

    def perturbed(encode: Any, batch: np.ndarray) -> np.ndarray:
        rows = real(encode, batch)
        if batch.dtype == np.int64:  # the text tower only: one feature of one prompt
            rows[0, 0] += 1e-2
        return rows

    monkeypatch.setattr(onnx_parity, "_torch", perturbed)
    target = tmp_path / "out"
    target.mkdir()  # an empty target stays as it was
    result = runner.invoke(app, ["models", "export", tiny_model, str(target), "--onnx"])
    assert result.exit_code == 2, result.output
    assert "the ONNX text tower does not match torch: max |diff| 1.00e-02" in result.stderr
    assert "nothing written" in result.stderr
    assert list(target.iterdir()) == [] and leftovers(tmp_path) == []


@pytest.mark.slow
def test_a_killed_export_leaves_no_complete_looking_folder(tiny_model: str, tmp_path: Path) -> None:
    target = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "clipcls", "models", "export", tiny_model, str(target), "--onnx"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "CLIPCLS_CACHE_DIR": str(tmp_path / "cache")},
    )
    try:
        deadline = time.monotonic() + 600  # a hang guard, far above an export's seconds
        while not list(tmp_path.glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}/image.onnx*")):
            assert process.poll() is None, "the export ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert not target.exists()
    left = leftovers(tmp_path)
    assert len(left) == 1 and left[0].endswith(PARTIAL_SUFFIX)
    assert not (tmp_path / left[0] / MANIFEST).exists()


def hf_tokenizer(backend: Any, mode: str = "") -> Any:
    """open_clip's HFTokenizer around a tokenizers object, built without transformers (which
    its constructor imports, to fetch a tokenizer from the hub)."""
    from types import SimpleNamespace

    from open_clip import tokenizer as tokenizers

    hf = object.__new__(tokenizers.HFTokenizer)
    hf.tokenizer_mode = mode
    hf.context_length = 16
    hf.clean_fn = tokenizers._clean_whitespace
    hf.strip_sep_token = True
    hf.tokenizer = SimpleNamespace(backend_tokenizer=backend, pad_token_id=3)
    return hf


def test_a_hugging_face_tokenizer_is_saved_as_one_json(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "a": 1, "photo": 2, "[PAD]": 3, "cat": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    entry = onnx_towers.tokenizer_entry(hf_tokenizer(backend), tmp_path)
    assert entry == {
        "kind": "hf",
        "file": "tokenizer.json",
        "context_length": 16,
        "clean": "whitespace",
        "strip_sep_token": True,
        "pad_id": 3,
    }
    saved = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert saved.encode("a photo of a cat").ids == [1, 2, 0, 1, 4]


@pytest.mark.parametrize(
    ("backend", "mode", "words"),
    [(None, "", "a slow tokenizer with no tokenizers JSON"), ("x", "clips", "mode 'clips'")],
)
def test_a_hugging_face_tokenizer_that_cannot_be_saved_is_refused(
    backend: Any, mode: str, words: str, tmp_path: Path
) -> None:
    from clipcls.errors import UsageError

    with pytest.raises(UsageError, match=words):
        onnx_towers.tokenizer_entry(hf_tokenizer(backend, mode), tmp_path)
    assert list(tmp_path.iterdir()) == []
