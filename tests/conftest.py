"""Shared fixtures: tiny random-weight open_clip models as local-dir: folders, and no network."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from clipcls.engine.model import ClipModel
from clipcls.engine.random_model import (
    CONFIG_FILE,
    RANDOM_MARKER,
    architecture_config,
    tiny_config,
    write_random_model,
)
from clipcls.pipeline import EmbedPlan, ModelInfo
from clipcls.settings import ModelSettings, Precision

# Before anything imports huggingface_hub: tests never reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parent.parent
SAMPLE_IMAGES = REPO / "sample_images"

# The tiny model `clipcls models export ViT-B-32 DIR --random --tiny` writes.
TINY_MODEL_CFG: dict[str, Any] = tiny_config(architecture_config("ViT-B-32"))


def write_tiny_model(folder: Path, seed: int = 0, arch: str = "ViT-B-32", **overrides: Any) -> Path:
    """Write a tiny random-weight CLIP as a local-dir: folder (the library's --random --tiny),
    without the random-weights mark: the tests' models stand for a user's own checkpoint, whose
    stderr carries no notice (tests/test_random_model.py covers the mark and its notice)."""
    write_random_model(folder, arch, seed=seed, tiny=True, **overrides)
    config_file = folder / CONFIG_FILE
    config = json.loads(config_file.read_text())
    del config[RANDOM_MARKER]
    config_file.write_text(json.dumps(config, indent=2) + "\n")
    return folder


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every cache at a temp folder so tests never touch the user's home."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CLIPCLS_CACHE_DIR", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    # The user's own defaults (clipcls.userconfig) never reach a test: none set, no file.
    for name in ("CLIPCLS_MODEL", "CLIPCLS_PRECISION", "CLIPCLS_RUNTIME", "CLIPCLS_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config_home"))
    return cache


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny CLIP with GELU, as a `local-dir:` model name."""
    return f"local-dir:{write_tiny_model(tmp_path_factory.mktemp('tiny'))}"


@pytest.fixture(scope="session")
def tiny_biased_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny CLIP with a SigLIP-style logit bias and QuickGELU."""
    folder = tmp_path_factory.mktemp("tiny_bias")
    return f"local-dir:{write_tiny_model(folder, seed=1, init_logit_bias=-2.5, quick_gelu=True)}"


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny SigLIP2 (sigmoid loss, logit bias -10, timm vision tower, CLIP's tokenizer: see
    random_model.SIGLIP_TINY_NOTE), as a `local-dir:` model name."""
    folder = tmp_path_factory.mktemp("tiny_siglip")
    return f"local-dir:{write_tiny_model(folder, seed=2, arch='ViT-B-16-SigLIP2')}"


def export_onnx_tiny(source: str, folder: Path) -> Path:
    """Export a local-dir: model to an ONNX folder (both towers, parity-checked)."""
    from clipcls.engine.onnx_export import export_onnx

    export_onnx(ModelSettings(source, cache_dir=folder.parent / "cache"), folder)
    return folder


@pytest.fixture(scope="session")
def onnx_tiny_dir(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_model exported as an ONNX folder (its text tower cut to any length); export costs
    seconds, so once per session: tests must not change it (copy it first)."""
    return export_onnx_tiny(tiny_model, tmp_path_factory.mktemp("onnx_tiny") / "export")


@pytest.fixture(scope="session")
def onnx_tiny_siglip_dir(tiny_siglip: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_siglip exported as an ONNX folder (text tower at its fixed context length, logit
    bias); once per session, not to be changed."""
    return export_onnx_tiny(tiny_siglip, tmp_path_factory.mktemp("onnx_siglip") / "export")


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder with four real photos from sample_images/ (copied, so tests may change it)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png"):
        (folder / name).write_bytes((SAMPLE_IMAGES / name).read_bytes())
    return folder


# Helpers shared by the test modules (no test module imports another).


DIM = 8


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector, axis=-1, keepdims=True)


class FakeEncoder:
    """Texts embed to a fixed random vector per text; images to their mean colour, padded."""

    logit_scale = 50.0
    plan = EmbedPlan()
    info = ModelInfo("fake", None, "cpu", "fp32")

    def __init__(self, logit_bias: float | None = None) -> None:
        self.logit_bias = logit_bias
        self.text_calls: list[list[str]] = []

    def prepare(self, image: Image.Image) -> np.ndarray:
        rgb = np.asarray(image, dtype=np.float32).mean(axis=(0, 1)) / 255.0
        return np.concatenate([rgb, np.full(DIM - 3, 0.1, dtype=np.float32)])

    def encode_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        return unit(np.stack(prepared)).astype(np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.text_calls.append(list(texts))
        return np.stack([self.text_vector(t) for t in texts]).astype(np.float32)

    @staticmethod
    def text_vector(text: str) -> np.ndarray:
        seed = sum(ord(c) * (i + 1) for i, c in enumerate(text))
        return unit(np.random.default_rng(seed).normal(size=DIM))


class CountingEncoder(FakeEncoder):
    """Counts image and text work, and how many decoded images wait for the model at once."""

    def __init__(self, overlap: bool = False, workers: int = 0) -> None:
        super().__init__()
        self.plan = EmbedPlan(
            image_cache_key="fake-images",
            text_cache_key="fake-texts",
            overlap_decode=overlap,
            decode_workers=workers,
        )
        self.images_encoded = 0
        self.texts_encoded = 0
        self.waiting = 0
        self.most_waiting = 0
        self.lock = threading.Lock()

    def prepare(self, image: Image.Image) -> np.ndarray:
        with self.lock:
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
        return super().prepare(image)

    def encode_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        time.sleep(0.005)  # a slow device, so decoding runs ahead
        with self.lock:
            self.waiting -= len(prepared)
        self.images_encoded += len(prepared)
        return super().encode_prepared(prepared)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.texts_encoded += len(texts)
        return super().encode_texts(texts)


def colour_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:03d}.png"
        Image.new("RGB", (8, 8), (i * 7 % 256, i * 13 % 256, i * 29 % 256)).save(path)
        paths.append(path)
    return paths


def fp32(model: str, **kwargs: object) -> ClipModel:
    return ClipModel(ModelSettings(model=model, precision=Precision.FP32, **kwargs))  # type: ignore[arg-type]


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def scores(rows: list[dict[str, Any]]) -> list[list[tuple[str, float]]]:
    """Each JSONL row's labels and probabilities (5 decimals), to compare runs."""
    return [[(p["label"], round(p["probability"], 5)) for p in r["predictions"]] for r in rows]


# Runs the CLI, then says on the last line of stderr whether torch (or torchvision, open_clip)
# was ever imported.
TORCH_REPORTING_CLI = (
    "import atexit, sys\n"
    "TORCH = ('torch', 'torchvision', 'open_clip')\n"
    "atexit.register(lambda: print('torch:', any(m in sys.modules for m in TORCH), "
    "file=sys.stderr))\n"
    "from clipcls.cli import main\n"
    "sys.argv = ['clipcls', *sys.argv[1:]]\n"
    "main()\n"
)


def clipcls_process(*args: str, cwd: Path | None = None) -> tuple[str, bool, str]:
    """(stdout, whether torch was imported, stderr) of one whole clipcls process that must
    succeed."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", TORCH_REPORTING_CLI, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    return done.stdout, last == "torch: True", done.stderr


def torch_free_stdout(code: str, also: Sequence[str] = ()) -> str:
    """Run Python code in a process of its own and return its stdout, failing if it imported
    torch, torchvision, open_clip or any module named in also."""
    import subprocess
    import sys

    banned = {"torch", "torchvision", "open_clip", *also}
    check = f"\nimport sys\nheavy = {banned!r} & set(sys.modules)\nassert not heavy, heavy\n"
    done = subprocess.run(
        [sys.executable, "-c", code + check], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def class_folders(root: Path, per_class: int = 2) -> Path:
    """A dataset of three class folders (cat, coffee, rocket) of sample photos."""
    for name, source in (
        ("cat", "chelsea.png"),
        ("coffee", "coffee.png"),
        ("rocket", "rocket.jpg"),
    ):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes((SAMPLE_IMAGES / source).read_bytes())
    return root


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A Ray head and a worker node, one CPU each, on 127.0.0.1 (one per test module)."""
    ray = pytest.importorskip("ray")
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    nodes = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    nodes.add_node(num_cpus=1)
    try:
        yield nodes.address
    finally:
        ray.shutdown()
        nodes.shutdown()
