"""The same tree on the local engine and on Ray, whole-process, side by side in one run.

Run: python benchmarks/scale.py [--images 600] [--runs 2]   (needs pip install '.[ray]')
Labels one generated tree (a third each 12 MP, 2 MP and VGA JPEGs, as speed.py makes them)
with a random-weight ViT-B-32, embedding cache off, each as a whole `clipcls label` process,
start-up included: with `--engine local`; with `--engine ray` starting a local Ray for the run
(and stopping it at the end); and with `--engine ray` joining a Ray that is already up
(`ray start --head`, started once before the runs, as a cluster is). Prints the wall times,
the ratios, and Ray's fixed costs: a Ray run over one image minus a local run over one image.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import make_images, make_model  # noqa: E402  (the shared generated data)


def wall(paths: list[str], model: Path, engine: str, address: str = "") -> float:
    """Seconds of one whole `clipcls label` process (address: the Ray to join, or start one)."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "clipcls", "label", *paths, "-o", f"{scratch}/out.csv"]
        command += ["--labels", "cat,dog,car", "--model", f"local-dir:{model}", "-q"]
        command += ["--no-cache", "--engine", engine]
        env = {**os.environ, "RAY_ADDRESS": address}
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env, cwd=scratch)
        return time.perf_counter() - started


@contextlib.contextmanager
def running_ray() -> Iterator[str]:
    """A Ray head on this machine for the duration, as `ray start` leaves one; its address."""
    ray = str(Path(sys.executable).with_name("ray"))
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    command = [ray, "start", "--head", "--include-dashboard=false", "--port=0"]
    command += ["--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    subprocess.run(command, check=True, env={**os.environ, "RAY_ADDRESS": ""}, **quiet)
    try:
        yield "auto"
    finally:
        subprocess.run([ray, "stop", "--force"], check=False, **quiet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    images = [str(p) for p in make_images(args.images)]
    model = make_model()
    print(f"# {len(images)} JPEGs, ViT-B-32 random weights, cache off")
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| run | local s | ray, started per run s | ratio | ray, joined s | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    joined: list[float] = []
    for run in range(1, args.runs + 1):
        local, started = wall(images, model, "local"), wall(images, model, "ray")
        with running_ray() as address:
            joined.append(wall(images, model, "ray", address))
        print(
            f"| {run} | {local:.1f} | {started:.1f} | {started / local:.2f}x "
            f"| {joined[-1]:.1f} | {joined[-1] / local:.2f}x |",
            flush=True,
        )
    one = wall(images[:1], model, "local")
    fixed = wall(images[:1], model, "ray") - one
    with running_ray() as address:
        fixed_joined = wall(images[:1], model, "ray", address) - one
    print(
        f"Ray's fixed cost (one image, ray minus local, whole process): {fixed:.1f} s starting "
        f"a local Ray for the run, {fixed_joined:.1f} s joining a running one"
    )


if __name__ == "__main__":
    main()
