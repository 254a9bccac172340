"""The inputs compare_trees.py hands both checkouts alike: a class-folder dataset, a support set,
a multi-label CSV, a tiny random CLIP and SigLIP, and calibration files, all written by the old
tree (or by no clipcls at all) so that both trees read the very same bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
# class name -> the sample photo its images are made from
CLASSES = {
    "cat": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "flower": "flower.jpg",
}
LABELS = ",".join(CLASSES)
PER_CLASS = 4  # dataset images per class
SHOTS = 2  # support images per class
# name -> (open_clip architecture, seed), as tests/conftest.py's tiny_model and tiny_siglip
MODELS = {"clip": ("ViT-B-32", 0), "siglip": ("ViT-B-16-SigLIP2", 2)}
CALIBRATIONS = ("plain", "support", "multi")  # softmax, fitted with the support set, multi-label
RANDOM_MARKER = "clipcls_random_weights"  # the config key `models export --random` adds


@dataclass(frozen=True)
class Inputs:
    """Where each input lies; calibrations maps `MODEL-KIND` (KIND: plain, support, multi) to
    a file, saved a model to the embeddings a `label --save-embeddings` run wrote."""

    dataset: Path
    support: Path
    multi_csv: Path
    models: dict[str, str]  # name -> `local-dir:PATH`
    calibrations: dict[str, Path]
    saved: dict[str, Path]


def write_class_images(root: Path, per_class: int, seed: int) -> None:
    """root/<class>/NN.jpg: each class's photo, a random crop and seeded noise per image."""
    rng = np.random.default_rng(seed)
    for name, source in CLASSES.items():
        photo = Image.open(SAMPLES / source).convert("RGB")
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            width, height = photo.size
            left, top = rng.integers(0, width // 4), rng.integers(0, height // 4)
            crop = photo.crop((left, top, left + 3 * width // 4, top + 3 * height // 4))
            pixels = np.asarray(crop.resize((96, 72)), dtype=np.int16)
            pixels = pixels + rng.integers(-12, 13, size=pixels.shape, dtype=np.int16)
            picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            picture.save(root / name / f"{i:02d}.jpg", quality=90)


def write_multi_csv(dataset: Path, target: Path) -> None:
    """path,labels: each dataset image's class and, for every other image, a second label."""
    rng = np.random.default_rng(7)
    names = list(CLASSES)
    lines = ["path,labels"]
    for index, image in enumerate(sorted(dataset.glob("*/*.jpg"))):
        labels = [image.parent.name]
        if index % 2:
            labels.append(str(rng.choice([n for n in names if n != labels[0]])))
        lines.append(f"{image},{';'.join(labels)}")
    target.write_text("\n".join(lines) + "\n")


def old_clipcls(tree: Path, *args: str, cwd: Path) -> None:
    """Run the old tree's clipcls once, as setup; stop the benchmark where it fails."""
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    env["CLIPCLS_CACHE_DIR"] = str(cwd / "setup-cache")
    done = subprocess.run(
        [sys.executable, "-m", "clipcls", *args], env=env, cwd=cwd, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"setup `clipcls {' '.join(args)}` failed:\n{done.stderr}")


def inputs_in(root: Path) -> Inputs:
    """Where make_inputs puts each input under root."""
    models = {name: f"local-dir:{root / f'model-{name}'}" for name in MODELS}
    calibrations = {
        f"{name}-{kind}": root / f"calibration-{name}-{kind}.json"
        for name in MODELS
        for kind in CALIBRATIONS
    }
    saved = {name: root / f"saved-{name}.parquet" for name in MODELS}
    return Inputs(
        root / "dataset", root / "support", root / "multi.csv", models, calibrations, saved
    )


def write_tiny_model(tree: Path, arch: str, seed: int, folder: Path) -> None:
    """`models export --random --tiny`, less the random-weights mark (as tests/conftest.py:
    the model stands for a user's own checkpoint)."""
    old_clipcls(tree, "models", "export", arch, str(folder), "--random", "--tiny",
                "--seed", str(seed), cwd=folder.parent)  # fmt: skip
    config_file = folder / "open_clip_config.json"
    config = json.loads(config_file.read_text())
    del config[RANDOM_MARKER]
    config_file.write_text(json.dumps(config, indent=2) + "\n")


def fit_calibrations(tree: Path, inputs: Inputs, root: Path) -> None:
    """Per model: a softmax calibration, one fitted with the support set, a multi-label one."""
    for name, model in inputs.models.items():
        kinds = {
            "plain": [str(inputs.dataset)],
            "support": [str(inputs.dataset), "--support", str(inputs.support)],
            "multi": ["--multi-label", str(inputs.multi_csv)],
        }
        for kind, args in kinds.items():
            target = str(inputs.calibrations[f"{name}-{kind}"])
            old_clipcls(tree, "evaluate", *args, "--calibrate", target, "--model", model,
                        "-q", cwd=root)  # fmt: skip


def make_inputs(old_tree: Path, root: Path) -> Inputs:
    """Every input under root (the calibrations and models by the old tree), written unless
    a finished earlier run left them there."""
    done = root / ".complete"
    if done.exists():
        return inputs_in(root)
    if root.exists() and any(root.iterdir()):  # a half-written run's, or someone's folder
        raise SystemExit(f"{root} holds no finished inputs: give an empty or new folder")
    write_class_images(root / "dataset", PER_CLASS, seed=0)
    write_class_images(root / "support", SHOTS, seed=1)
    write_multi_csv(root / "dataset", root / "multi.csv")
    inputs = inputs_in(root)
    for name, (arch, seed) in MODELS.items():
        write_tiny_model(old_tree, arch, seed, root / f"model-{name}")
    fit_calibrations(old_tree, inputs, root)
    for name, model in inputs.models.items():
        old_clipcls(old_tree, "label", str(inputs.dataset), "--labels", LABELS, "--model", model,
                    "--save-embeddings", "-o", str(inputs.saved[name]), "-q", cwd=root)  # fmt: skip
    done.touch()
    return inputs
