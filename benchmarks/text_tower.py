"""What a new large label set costs: prompts through the text tower, cache and all.

Run: python benchmarks/text_tower.py [--prompts 8000] [--before DIR]

ViT-B-32 with random weights (the cost of trained ones). The prompts are 1,000 generated
labels x the 80 `openai` templates (80,000), or the first --prompts of them. Each code runs in
its own process: the model loads, one short prompt warms the text tower (a process's first use
pays page faults), then `encode_prompts` embeds the prompts into an empty embedding cache
(timed: tokenizing, the tower, the cache writes), then again from the now-full cache (timed).
Peak RSS is the process's own, and the RSS once the model is loaded is printed beside it.
With --before DIR (a checkout of clipcls, such as the one before a change), that code is
measured the same way first, and the two codes' vectors are compared (max |difference|,
min cosine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import make_model  # noqa: E402  (the shared generated model)

REPO = Path(__file__).resolve().parent.parent
COLOURS = ["red", "blue", "green", "small", "large", "old", "young", "wooden", "metal", "striped"]
THINGS = [
    "cat", "dog", "car", "bicycle", "rocket", "cup of coffee", "flower", "astronaut", "tree",
    "house", "bridge", "boat", "train", "guitar", "clock", "chair", "lamp", "teapot", "kite",
    "horse", "owl", "snail", "mountain bike", "fire truck", "sea turtle", "golden retriever",
    "tabby cat", "sports car", "park bench", "traffic light", "violin", "cheeseburger",
    "pizza", "umbrella", "backpack", "laptop", "telescope", "lighthouse", "castle", "volcano",
    "waterfall", "canoe", "tractor", "helicopter", "sailboat", "penguin", "giraffe", "zebra",
    "elephant", "butterfly", "jellyfish", "strawberry", "pineapple", "mushroom", "cactus",
    "sunflower", "bookshelf", "typewriter", "microscope", "saxophone", "accordion", "harp",
    "wheelbarrow", "lawn mower", "hot air balloon", "submarine", "windmill", "igloo", "tent",
    "hammock", "bulldozer", "forklift", "ambulance", "school bus", "motor scooter", "unicycle",
    "skateboard", "snowboard", "surfboard", "kayak", "paddle", "anchor", "compass", "hourglass",
    "candle", "lantern", "teddy bear", "rubber duck", "chess board", "dice", "trumpet", "drum",
    "banjo", "cello", "flute", "piano", "harmonica", "tuba", "xylophone", "bagpipes",
]  # fmt: skip
LABELS = [f"{colour} {thing}" for thing in THINGS for colour in COLOURS][:1000]


def prompts(count: int) -> list[str]:
    """The first count prompts of 1,000 labels x the 80 openai templates, label by label."""
    from clipcls.prompts import load_templates

    templates = load_templates("openai").templates
    every = [template.replace("{}", label) for label in LABELS for template in templates]
    return every[:count]


def child(model: str, count: int, vectors: str) -> None:
    """Measure one code (the clipcls on sys.path) in this process; print a JSON line."""
    import clipcls
    from clipcls.cache import EmbeddingCache
    from clipcls.classify import encode_prompts
    from clipcls.engine.model import ClipModel
    from clipcls.settings import ModelSettings

    texts = prompts(count)
    encoder = ClipModel(ModelSettings(model=f"local-dir:{model}"))
    encoder.encode_texts(["a photo of a warm-up."])
    loaded = _rss_mb()
    with tempfile.TemporaryDirectory() as folder:
        cache = EmbeddingCache(Path(folder))
        started = time.perf_counter()
        out = encode_prompts(encoder, texts, cache)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        again = encode_prompts(encoder, texts, cache)
        cached = time.perf_counter() - started
        cache.close()
    started = time.perf_counter()
    encoder._tokenizer(texts)  # what tokenizing cost of the whole (after: its caches warm)
    tokenize = time.perf_counter() - started
    assert np.array_equal(out, again)
    np.save(vectors, out)
    info = {
        "code": str(Path(clipcls.__file__).parent.parent),
        "seconds": seconds,
        "tokenize": tokenize,
        "cached": cached,
        "loaded_mb": loaded,
        "peak_mb": _peak_mb(),
    }
    print(json.dumps(info))


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(code: Path, model: Path, count: int, vectors: Path) -> dict[str, float]:
    """Run child() with `code` first on the path, in its own process."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    command = [sys.executable, __file__, "--child", str(model), str(vectors), "--prompts"]
    done = subprocess.run(
        [*command, str(count)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{code} failed:\n{done.stderr}")
    got = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    if Path(got.pop("code")).resolve() != code.resolve():
        raise SystemExit(f"the child imported clipcls from elsewhere than {code}")
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8000)
    parser.add_argument("--before", type=Path, help="a checkout of the code before a change")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "VECTORS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.prompts, args.child[1])
        return
    model, count = make_model(), args.prompts
    import torch

    print(f"# ViT-B-32 random weights, {count:,} prompts, {os.cpu_count()} cores, torch", end="")
    print(f" {torch.__version__}, Python {sys.version.split()[0]}")
    codes = [("before", args.before), ("this code", REPO)] if args.before else [("this", REPO)]
    print(
        "| code | seconds | prompts/s | 80,000 at that rate | of it tokenizing | cached re-run",
        end="",
    )
    print(" | RSS loaded | peak RSS |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as scratch:
        vectors = []
        for name, code in codes:
            vectors.append(Path(scratch, f"{len(vectors)}.npy"))
            got = measure(code, model, count, vectors[-1])
            rate = count / got["seconds"]
            print(
                f"| {name} | {got['seconds']:.1f} | {rate:.0f} | {80000 / rate / 60:.1f} min"
                f" | {got['tokenize']:.1f} s | {got['cached']:.2f} s"
                f" | {got['loaded_mb']:.0f} MB | {got['peak_mb']:.0f} MB |"
            )
        if len(vectors) == 2:
            a, b = (np.load(path) for path in vectors)
            cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            print(
                f"\nbefore vs this code: max |difference| {np.abs(a - b).max():.2e}, "
                f"min cosine {cosine.min():.7f}, identical rows {int((a == b).all(axis=1).sum())}"
                f" of {len(a)}"
            )


if __name__ == "__main__":
    main()
