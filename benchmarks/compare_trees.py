"""Two checkouts of clipcls side by side: whole-process `clipcls label` with a cold cache,
alternating old and new so that a machine's load moving hurts both alike.

Run: python benchmarks/compare_trees.py OLD_TREE [NEW_TREE] [--images 48] [--rounds 3]
     (OLD_TREE: e.g. `git worktree add /tmp/before <commit>`; NEW_TREE: this checkout)

Each run is its own process with PYTHONPATH set to its tree; prints wall and CPU seconds
(CPU time moves less with other jobs on the machine), the medians, their ratio new/old, and
whether both trees wrote the same CSV bytes. Images and the random ViT-B-32 come from speed.py.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import make_images, make_model  # noqa: E402

LABELS = "cat,dog,rocket,coffee"


def run_label(tree: Path, images: Path, model: Path, work: Path) -> tuple[float, float, bytes]:
    """(wall s, CPU s, CSV bytes) of one whole `clipcls label` from tree, cold cache."""
    cache, out = work / "cache", work / "out.csv"
    shutil.rmtree(cache, ignore_errors=True)
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "clipcls", "label", str(images), "--labels", LABELS]
    command += ["--model", f"local-dir:{model}", "--cache-dir", str(cache), "-o", str(out), "-q"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=work, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, out.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path, nargs="?", default=Path(__file__).parents[1])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    model = make_model()
    with tempfile.TemporaryDirectory(prefix="clipcls-compare-") as scratch:
        folder = Path(scratch, "images")
        folder.mkdir()
        for i, image in enumerate(make_images(args.images)):
            os.link(image, folder / f"{i:04d}-{image.parent.name}.jpg")
        walls: dict[str, list[float]] = {name: [] for name in trees}
        cpus: dict[str, list[float]] = {name: [] for name in trees}
        written: dict[str, bytes] = {}
        for round_ in range(args.rounds):
            order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            for name in order:
                work = Path(scratch, name)
                work.mkdir(exist_ok=True)
                wall, cpu, written[name] = run_label(trees[name], folder, model, work)
                walls[name].append(wall)
                cpus[name].append(cpu)
                print(f"{name}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    wall_old, wall_new = statistics.median(walls["old"]), statistics.median(walls["new"])
    cpu_old, cpu_new = statistics.median(cpus["old"]), statistics.median(cpus["new"])
    print(f"\n| median of {args.rounds} | old | new | new / old |\n| --- | ---: | ---: | ---: |")
    print(f"| wall s | {wall_old:.1f} | {wall_new:.1f} | {wall_new / wall_old:.3f} |")
    print(f"| CPU s | {cpu_old:.1f} | {cpu_new:.1f} | {cpu_new / cpu_old:.3f} |")
    print(f"\nsame CSV bytes: {written['old'] == written['new']}")


if __name__ == "__main__":
    main()
