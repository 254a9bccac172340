"""How fast `clipcls review` opens a 10,000-row output, and what a thumbnail costs.

Run: python benchmarks/review.py [--images 10002] [--runs 3]

The images are speed.py's set (a third each of 12 MP, 2 MP and VGA JPEGs, 36 distinct, the rest
hard links), labeled once for real by `clipcls label --top-k 2` with a tiny random-weight model
(the model does not matter here: review never loads one). Then, on this machine:
1. whole process: from starting `clipcls review OUTPUT --port 0` until the first page of rows
   (120, lowest margin first) has been served, polling /api/rows (each run a fresh process and
   an empty thumbnail cache). Goal: under 2 s.
2. thumbnails of the first page's tiles over HTTP, 6 at a time as a browser fetches them:
   cold (made from the image) and cached (read from disk), ms per tile.
3. the same in this process without HTTP, per image size: cold and cached ms per tile, and
   side by side the decode behind a cold tile with libjpeg's draft scaling (what Thumbs does)
   and without it (the full image decoded, then shrunk), and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import DATA, make_images  # noqa: E402  (the shared generated data)

REPO = Path(__file__).resolve().parent.parent
LABELS = "cat,dog,car,rocket,cup of coffee,flower"


def labeled_output(images: list[Path]) -> Path:
    """`clipcls label` over the images into DATA/review-N/out.csv, once."""
    from clipcls.engine.random_model import write_random_model

    folder = DATA / f"review-{len(images)}"
    output = folder / "out.csv"
    if output.exists():
        return output
    model = folder / "tiny-model"
    write_random_model(model, "ViT-B-32", seed=0, tiny=True)
    source = images[0].parent.parent
    command = [sys.executable, "-m", "clipcls", "label", str(source), "--labels", LABELS]
    command += ["--model", f"local-dir:{model}", "--top-k", "2", "-o", str(output), "--quiet"]
    started = time.monotonic()
    subprocess.run(command, check=True, env=_env(folder / "cache"))
    print(f"labeled {len(images)} images in {time.monotonic() - started:.0f} s (once)")
    return output


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "CLIPCLS_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return bytes(answer.read())


def open_once(output: Path, cache: Path) -> tuple[float, float, float]:
    """Seconds from process start to the first page served; then ms per tile for that page's
    thumbnails, cold and cached."""
    started = time.monotonic()
    command = [sys.executable, "-m", "clipcls", "review", str(output), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=_env(cache))
    try:
        line = process.stdout.readline().decode()  # type: ignore[union-attr]
        url = line.split("review: ", 1)[1].strip()
        base, token = url.split("/?token=")
        while True:
            try:
                rows = json.loads(_get(f"{base}/api/rows?offset=0&limit=120&token={token}"))
                break
            except OSError:
                time.sleep(0.005)
        seconds = time.monotonic() - started
        thumbs = [f"{base}/thumb/{row['index']}?token={token}" for row in rows["rows"]]
        return (seconds, *_thumb_times(thumbs))
    finally:
        process.send_signal(2)  # Ctrl-C: it must stop by itself
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            print("clipcls review did not stop on Ctrl-C within 30 s: killed", flush=True)


def _thumb_times(urls: list[str]) -> tuple[float, float]:
    """ms per tile for the page's thumbnails fetched 6 at a time: cold, then cached."""
    times = []
    for _ in range(2):
        started = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(_get, urls))
        times.append(1000 * (time.monotonic() - started) / len(urls))
    return times[0], times[1]


def in_process(output: Path) -> None:
    """Cold and cached thumbnail ms per tile by image size, one thread, no HTTP."""
    from clipcls.review.table import load_review
    from clipcls.review.thumbs import Thumbs

    table = load_review(output)
    by_size: dict[str, list[str]] = {}
    for index in range(len(table.rows)):
        path = table.file_path(index)
        by_size.setdefault(Path(path).parent.name, []).append(path)
    with tempfile.TemporaryDirectory() as folder:
        thumbs = Thumbs(Path(folder))
        for size, paths in sorted(by_size.items()):
            sample = paths[:24]
            cold = _each(thumbs, sample)
            cached = _each(thumbs, sample)
            draft, full = _decodes(sample)
            print(
                f"  {size:>5}: cold {cold:6.1f} ms/tile, cached {cached:5.2f} ms/tile; decode "
                f"with draft {draft:6.1f} ms, full {full:6.1f} ms ({full / draft:.1f}x)"
            )


def _decodes(paths: list[str]) -> tuple[float, float]:
    """ms per image to a 256 px thumbnail: draft-scaled decode, then the full decode."""
    from PIL import Image

    from clipcls.images import load_image
    from clipcls.review.thumbs import THUMB_SIZE

    times = []
    for draft in (THUMB_SIZE, None):
        started = time.monotonic()
        for path in paths:
            load_image(path, draft).thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BICUBIC)
        times.append(1000 * (time.monotonic() - started) / len(paths))
    return times[0], times[1]


def _each(thumbs: object, paths: list[str]) -> float:
    started = time.monotonic()
    for path in paths:
        assert thumbs.get(path).problem is None  # type: ignore[attr-defined]
    return 1000 * (time.monotonic() - started) / len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10002)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    output = labeled_output(make_images(args.images))
    rows = sum(1 for _ in output.open()) - 1
    print(f"{output}: {rows} rows, {os.cpu_count()} cores")
    opens, cold, cached = [], [], []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as cache:
            (output.parent / "out.csv.review.jsonl").unlink(missing_ok=True)
            seconds, first, again = open_once(output, Path(cache))
        opens.append(seconds)
        cold.append(first)
        cached.append(again)
        print(f"run {run + 1}: first page served {seconds:.2f} s after start", flush=True)
    print(f"open to first page: median {statistics.median(opens):.2f} s (goal < 2 s)")
    print(
        f"first page's 120 thumbnails over HTTP, 6 at a time: cold "
        f"{statistics.median(cold):.1f} ms/tile, cached {statistics.median(cached):.2f} ms/tile"
    )
    print("thumbnails in one thread, no HTTP, 24 of each size:")
    in_process(output)


if __name__ == "__main__":
    main()
