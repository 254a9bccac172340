"""The same tree on the local engine and on Ray, whole-process, side by side in one run.

Run: python benchmarks/scale.py [--images 600] [--runs 2]   (needs pip install '.[ray]')
Labels one generated tree (a third each 12 MP, 2 MP and VGA JPEGs, as speed.py makes them)
with a random-weight ViT-B-32, embedding cache off, first with `--engine local`, then with
`--engine ray` (a local Ray started for the run), each as a whole `clipcls label` process,
start-up included. Prints both wall times, their ratio, and Ray's fixed cost: the wall time of
a Ray run over one image minus a local run over one image.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import make_images, make_model  # noqa: E402  (the shared generated data)


def wall(paths: list[str], model: Path, engine: str) -> float:
    """Seconds of one whole `clipcls label` process."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "clipcls", "label", *paths, "-o", f"{scratch}/out.csv"]
        command += ["--labels", "cat,dog,car", "--model", f"local-dir:{model}", "-q"]
        command += ["--no-cache", "--engine", engine]
        env = {**os.environ, "RAY_ADDRESS": ""}
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env, cwd=scratch)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    images = [str(p) for p in make_images(args.images)]
    model = make_model()
    print(f"# {len(images)} JPEGs, ViT-B-32 random weights, cache off")
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| run | local s | ray s | ray / local |")
    print("| --- | ---: | ---: | ---: |")
    for run in range(1, args.runs + 1):
        local, ray = wall(images, model, "local"), wall(images, model, "ray")
        print(f"| {run} | {local:.1f} | {ray:.1f} | {ray / local:.2f}x |", flush=True)
    fixed = wall(images[:1], model, "ray") - wall(images[:1], model, "local")
    print(f"Ray's fixed cost (one image, ray minus local, whole process): {fixed:.1f} s")


if __name__ == "__main__":
    main()
