"""Peak memory of `clipcls label` for small and large trees: the stream must stay flat.

Run: python benchmarks/label_memory.py [--small 100] [--large 10000]
Generates two folders of small JPEGs, writes a tiny random-weight model (memory, not speed, is
measured here), runs `clipcls label` on each in its own process and prints both peak RSS values
and their difference. Target: large within +200 MB of small.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file

TINY = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "head_width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
}


def write_model(folder: Path) -> str:
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY)
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY}))
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    return f"local-dir:{folder}"


def write_images(folder: Path, count: int) -> None:
    rng = np.random.default_rng(count)
    for i in range(count):
        sub = folder / f"{i // 1000:03d}"  # a realistic tree, not one giant folder
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, size=(96, 128, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"{i:06d}.jpg", quality=85)


def peak_rss_mb(command: list[str]) -> tuple[float, float]:
    """Run command as a child; return (peak RSS in MB, seconds)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{process.stderr.read().decode()}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = write_model(root / "model")
        results = {}
        for name, count in (("small", args.small), ("large", args.large)):
            write_images(root / name, count)
            command = [
                sys.executable,
                "-m",
                "clipcls",
                "label",
                str(root / name),
                "-o",
                str(root / f"{name}.csv"),
                "--labels",
                "cat,dog,car",
                "--templates",
                "photo",
                "--model",
                model,
                "--quiet",
            ]
            results[name] = peak_rss_mb(command)
            rows = (root / f"{name}.csv").read_text().count("\n") - 1
            assert rows == count, (rows, count)
    (small_mb, small_s), (large_mb, large_s) = results["small"], results["large"]
    print("| images | peak RSS | time |")
    print("| ---: | ---: | ---: |")
    print(f"| {args.small} | {small_mb:.0f} MB | {small_s:.1f} s |")
    print(f"| {args.large} | {large_mb:.0f} MB | {large_s:.1f} s |")
    verdict = "within" if large_mb - small_mb <= 200 else "OVER"
    print(f"large - small = {large_mb - small_mb:+.0f} MB ({verdict} the +200 MB target)")


if __name__ == "__main__":
    main()
