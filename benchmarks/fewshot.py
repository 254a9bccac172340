"""What a support set adds to a label run: 16 examples x 100 labels, side by side, whole process.

Run: python benchmarks/fewshot.py [--classes 100] [--shots 16] [--images 240] [--rounds 3]

ViT-B-32 with random weights. The support set (classes x shots generated 96x96 JPEGs, one folder
per label) and the labels' prompts are embedded into a cache once beforehand, as a user's second
run with the same support finds them. Each measured run is one whole `clipcls label` process over
--images new JPEGs (VGA and 2 MP, from the sample photos), on a fresh copy of that cache, so the
inputs are embedded every time; runs with and without `--support` alternate, --rounds each.
Prints the medians, the ratio, and the support step alone (examples looked up and the cache
model fitted) measured in-process. Goal (issue 24): with support < 1.05x without.
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

GOAL = 1.05


def make_support(folder: Path, classes: int, shots: int) -> list[str]:
    """classes folders of shots small noisy JPEGs, each class its own colour and stripe width."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    labels = [f"class {i:03d}" for i in range(classes)]
    for index, label in enumerate(labels):
        (folder / label).mkdir(parents=True)
        colour = rng.integers(0, 256, size=3)
        for shot in range(shots):
            picture = np.tile(colour, (96, 96, 1)).astype(np.int16)
            picture[:, :: 2 + index % 7] = 255 - colour
            picture += rng.integers(-20, 21, size=picture.shape, dtype=np.int16)
            image = Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8))
            image.save(folder / label / f"{shot:02d}.jpg", quality=90)
    return labels


def label_run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one whole `clipcls label` process (exit status checked); CPU
    time moves less than wall time when other jobs share the cores."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "clipcls", "label", *args], env=env,
                          capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"clipcls label failed: {done.stderr.strip().splitlines()[-1:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def inputs(scratch: Path, count: int, round_: int, kind: str) -> Path:
    """count new input files (copies, so the cache has never seen them) in their own folder."""
    folder = scratch / f"in-{kind}-{round_}"
    folder.mkdir()
    pictures = [p for p in make_images(max(144, count)) if p.parent.name != "12MP"]
    for i in range(count):
        shutil.copy(pictures[i % len(pictures)], folder / f"{i:05d}.jpg")
    return folder


def support_step(model: Path, support: Path, labels: list[str], cache: Path) -> float:
    """Seconds to look the examples up and fit the cache model, in this process (model loaded)."""
    os.environ["CLIPCLS_CACHE_DIR"] = str(cache)
    from clipcls.backends.base import BackendConfig, open_backend
    from clipcls.cache import EmbeddingCache
    from clipcls.fewshot.support import embed_support, find_support
    from clipcls.labels import Label
    from clipcls.prompts import load_templates
    from clipcls.scoring.spec import ScoreSpec, build_scorer, with_support
    from clipcls.settings import ModelSettings

    settings = ModelSettings(model=f"local-dir:{model}")
    cached = EmbeddingCache(settings.resolved_cache_dir())
    backend = open_backend("local", BackendConfig(settings, cached))
    chosen = tuple(Label.plain(name) for name in labels)
    base = build_scorer(ScoreSpec(chosen, load_templates("openai")), backend)
    started = time.perf_counter()
    found = embed_support(find_support(support, chosen), backend.embed_images)
    with_support(base, found)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = make_model()
    with tempfile.TemporaryDirectory() as name:
        scratch = Path(name)
        labels = make_support(scratch / "support", args.classes, args.shots)
        labels_file = scratch / "labels.txt"
        labels_file.write_text("\n".join(labels) + "\n")
        common = ["--labels-file", str(labels_file), "--model", f"local-dir:{model}", "-q"]
        warm = {**os.environ, "CLIPCLS_CACHE_DIR": str(scratch / "cache")}
        first = inputs(scratch, 4, 0, "warm")
        label_run([str(first), *common, "--support", str(scratch / "support"),
                   "-o", str(scratch / "warm.csv")], warm)  # fmt: skip
        times: dict[str, list[tuple[float, float]]] = {"without": [], "with --support": []}
        for round_ in range(args.rounds):
            for kind, extra in (("without", []), ("with --support", ["--support"])):
                cache = scratch / f"cache-{round_}-{len(extra)}"
                shutil.copytree(scratch / "cache", cache)
                env = {**os.environ, "CLIPCLS_CACHE_DIR": str(cache)}
                folder = inputs(scratch, args.images, round_, str(len(extra)))
                more = [*extra, str(scratch / "support")] if extra else []
                out = str(scratch / f"out-{round_}-{len(extra)}.csv")
                times[kind].append(label_run([str(folder), *common, *more, "-o", out], env))
        step = support_step(model, scratch / "support", labels, scratch / "cache")
    report(args, times, step)


def report(
    args: argparse.Namespace, times: dict[str, list[tuple[float, float]]], step: float
) -> None:
    head = f"# ViT-B-32 random weights, {args.classes} labels x {args.shots} examples, "
    print(f"{head}{args.images} new images per run, {os.cpu_count()} cores; whole process")
    print("| run | median wall s | median CPU s | wall, each run |\n| --- | ---: | ---: | --- |")
    medians = {}
    for kind, found in times.items():
        wall = statistics.median(t for t, _ in found)
        cpu = statistics.median(c for _, c in found)
        medians[kind] = (wall, cpu)
        runs = ", ".join(f"{t:.2f}" for t, _ in found)
        print(f"| label {kind} | {wall:.2f} | {cpu:.2f} | {runs} |")
    for what, at in (("wall", 0), ("CPU", 1)):
        ratio = medians["with --support"][at] / medians["without"][at]
        verdict = "goal met" if ratio < GOAL else f"goal < {GOAL:.2f}x"
        print(f"with / without, {what}: {ratio:.3f}x ({verdict})")
    print(f"the support step alone (examples from the cache, alpha and beta fitted): {step:.2f} s")


if __name__ == "__main__":
    main()
