"""New labels on images already seen: a warm server and saved embeddings against a cold run.

Run: python benchmarks/relabel.py [--images 48]   (needs pip install '.[serve]')

ViT-B-32 with random weights, 48 camera JPEGs (12 MP), each step one whole clipcls process:
1. cold: `clipcls label DIR --labels OLD --save-embeddings -o run.jsonl`, empty cache.
2. the same folder with NEW labels, each from a copy of the cache the cold run left (so no
   method finds the new prompts that another one embedded):
   (a) through a warm `clipcls serve` on 127.0.0.1 (started on its own copy of that cache,
       ready, and warmed by one request on another image): `label DIR --labels NEW --server`;
   (b) `label --from-embeddings run.jsonl --labels NEW` (printed as not available where the
       option is not there yet);
   (c) `label DIR --labels NEW` locally: images cached, the model loading for the prompts.
Prints each wall time, cold/(a) and cold/(b) (the goal: >= 10x), and whether the rows of (a)
and (b) equal (c)'s (path, labels and probabilities, exactly or to float noise; the model
column not compared).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import free_port  # noqa: E402
from speed import make_images, make_model  # noqa: E402

SAMPLE_IMAGES = Path(__file__).resolve().parent.parent / "sample_images"
OLD = "cat,dog,car"
NEW = "rocket,cup of coffee,flower,astronaut"
GOAL = 10.0


def clipcls(*args: str, env: dict[str, str], cwd: Path) -> tuple[float, str | None]:
    """Seconds of one whole clipcls process, and its last error line (None if it succeeded)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "clipcls", *args], env=env, cwd=cwd, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    failure = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
    return seconds, None if done.returncode == 0 else f"exit {done.returncode}: {failure}"


def has_option(command: str, option: str, env: dict[str, str]) -> bool:
    """Whether `clipcls COMMAND --help` lists option."""
    done = subprocess.run(
        [sys.executable, "-m", "clipcls", command, "--help"],
        env=env,
        capture_output=True,
        text=True,
    )
    return option in done.stdout


def with_cache(base: dict[str, str], snapshot: Path, folder: Path) -> dict[str, str]:
    """The environment of a method with its own copy of the cache the cold run left."""
    shutil.copytree(snapshot, folder)
    return {**base, "CLIPCLS_CACHE_DIR": str(folder)}


def start_server(model: Path, root: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:  # type: ignore[type-arg]
    """`clipcls serve` on a free loopback port, once it answers a predict request."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "clipcls", "serve", "--model", f"local-dir:{model}"]
    command += ["--port", str(port), "--allow-dir", str(root), "--allow-dir", str(SAMPLE_IMAGES)]
    server = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    warm = ["predict", str(SAMPLE_IMAGES / "rocket.jpg"), "--labels", OLD, "--server", url]
    deadline = time.monotonic() + 300
    while clipcls(*warm, "-q", env=env, cwd=root)[1] is not None:
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.5)
    return server, url


def rows(path: Path) -> list[dict[str, Any]] | None:
    """The rows of a label JSONL file, without the model column; None if there is none."""
    if not path.exists():
        return None
    found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        {k: v for k, v in row.items() if k not in ("model", "embedding")}
        for row in found
        if "path" in row
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    args = parser.parse_args()
    model = make_model()
    camera = [p for p in make_images(144) if p.parent.name == "12MP"][: args.images]
    folder, weights = str(camera[0].parent), f"local-dir:{model}"
    print(f"# ViT-B-32 random weights, {len(camera)} camera JPEGs (12 MP), ", end="")
    print(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}; whole-process seconds")
    with tempfile.TemporaryDirectory() as name:
        scratch = Path(name)
        base = {**os.environ, "CLIPCLS_CACHE_DIR": str(scratch / "cold-cache")}
        times: dict[str, float | str] = {}
        cold, failed = clipcls(
            "label", folder, "--labels", OLD, "--model", weights, "-q",
            "--save-embeddings", "-o", "run.jsonl", env=base, cwd=scratch,
        )  # fmt: skip
        if failed:
            raise SystemExit(f"the cold run failed: {failed}")
        snapshot = scratch / "cold-cache"
        new = ("--labels", NEW, "-q")
        server_env = with_cache(base, snapshot, scratch / "server-cache")
        server, url = start_server(model, camera[0].parent.parent, server_env)
        try:
            env = with_cache(base, snapshot, scratch / "a-cache")
            a = clipcls(
                "label", folder, *new, "--server", url, "-o", "a.jsonl", env=env, cwd=scratch
            )
            times["(a) warm server"] = a[1] or a[0]
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
        env = with_cache(base, snapshot, scratch / "b-cache")
        if has_option("label", "--from-embeddings", env):
            saved = ("label", "--from-embeddings", "run.jsonl", *new, "--model", weights)
            b = clipcls(*saved, "-o", "b.jsonl", env=env, cwd=scratch)
            if b[1] is not None and b[1].startswith("exit 2"):  # it may want the folder too
                b = clipcls(*saved[:1], folder, *saved[1:], "-o", "b.jsonl", env=env, cwd=scratch)
            times["(b) --from-embeddings"] = b[1] or b[0]
        else:
            times["(b) --from-embeddings"] = "not available (no such option in this clipcls)"
        env = with_cache(base, snapshot, scratch / "c-cache")
        c = clipcls(
            "label", folder, *new, "--model", weights, "-o", "c.jsonl", env=env, cwd=scratch
        )
        times["(c) local, model loading"] = c[1] or c[0]
        report(cold, times, scratch)


def compare(mine: list[dict[str, Any]] | None, reference: list[dict[str, Any]]) -> str:
    """Whether rows equal the reference: exactly, or with the same labels (and the largest
    probability difference), or not."""
    if mine is None or len(mine) != len(reference):
        return "no (rows missing)"
    if mine == reference:
        return "identical"
    scores = [
        (got, want)
        for row, ref in zip(mine, reference, strict=True)
        for got, want in zip(row["predictions"], ref["predictions"], strict=True)
    ]
    if any(got["label"] != want["label"] for got, want in scores):
        return "no (labels differ)"
    gap = max(abs(got["probability"] - want["probability"]) for got, want in scores)
    return f"same labels, probabilities within {gap:.1e}"


def report(cold: float, times: dict[str, float | str], scratch: Path) -> None:
    print("| run | seconds | cold / this | rows against (c)'s |\n| --- | ---: | ---: | --- |")
    print(f"| cold local label, {OLD} | {cold:.2f} | 1.0x | |")
    reference = rows(scratch / "c.jsonl") or []
    for (name, seconds), file in zip(times.items(), ("a", "b", "c"), strict=True):
        if isinstance(seconds, str):
            print(f"| {name} | {seconds} | | |")
            continue
        ratio = cold / seconds
        goal = "" if file == "c" else (" (goal met)" if ratio >= GOAL else f" (goal {GOAL:.0f}x)")
        same = "" if file == "c" else compare(rows(scratch / f"{file}.jsonl"), reference)
        print(f"| {name} | {seconds:.2f} | {ratio:.1f}x{goal} | {same} |")


if __name__ == "__main__":
    main()
