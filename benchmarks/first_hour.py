"""A newcomer's first hour, timed step by step from a fresh clone, on a loaded machine.

Run: python benchmarks/first_hour.py [--load 2] [--no-tests] [--compare]

What a new user does, each step a whole process (start-up included) run from a fresh clone of
this checkout with a fresh HOME (no clipcls cache, no weights):
1. the README's install (`python3 -m venv .venv && .venv/bin/pip install '.[test]'`);
2. the README's test command (`.venv/bin/pytest -q`), unless --no-tests;
3. the offline minute: `clipcls models export ViT-B-32 tiny-random --random --tiny`, then
   `clipcls predict sample_images ...` on it;
4. the labeling loop: `label` -> `review` (the page's API: open until the first rows are
   served, three decisions, Ctrl-C) -> `review --export` -> `review --export-support` ->
   `label --support` -> `evaluate --shots`.
While it runs, --load N processes spin on the CPU (default 2: both cores of a 2-core laptop
busy with something else). --compare runs steps 3-4 again without the load and prints each
step's loaded/unloaded ratio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LABELS = "cat,cup of coffee,rocket launch,astronaut,coins,flower"
MODEL = ["-m", "local-dir:tiny-random", "--precision", "fp32"]
KEY = "first-hour-key-0123456789"


def spin() -> None:
    while True:
        pass


class Steps:
    """Runs commands in the clone with the fresh HOME and records each one's wall time."""

    def __init__(self, clone: Path, home: Path) -> None:
        self.clone, self.times = clone, {}
        self.env = {
            **os.environ,
            "HOME": str(home),
            "PATH": f"{clone}/.venv/bin:{os.environ['PATH']}",
        }
        for name in ("PYTHONPATH", "CLIPCLS_CACHE_DIR", "VIRTUAL_ENV"):
            self.env.pop(name, None)

    def run(self, name: str, command: str, cwd: Path | None = None) -> float:
        started = time.monotonic()
        done = subprocess.run(
            command,
            shell=True,
            cwd=cwd or self.clone,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        seconds = time.monotonic() - started
        self.times[name] = seconds
        tail = done.stdout.strip().splitlines()[-1:] or [""]
        print(f"{seconds:8.1f} s  {name}: {tail[0][:90]}", flush=True)
        if done.returncode:
            sys.exit(f"{name} failed ({done.returncode}):\n{done.stdout[-3000:]}")
        return seconds

    def review(self) -> float:
        """`clipcls review` until its first rows are served, three decisions, then Ctrl-C."""
        started = time.monotonic()
        command = ["clipcls", "review", "labels.csv", "--port", "0", "--api-key", KEY]
        page = subprocess.Popen(
            command,
            cwd=self.clone,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            base = page.stdout.readline().split("review: ", 1)[1].split("/?token=")[0]  # type: ignore[union-attr]
            rows = _call(f"{base}/api/rows?limit=3")["rows"]
            for row in rows:
                decision = {"index": row["index"], "action": "set", "label": "cat"}
                _call(f"{base}/api/decide", decision)
        finally:
            page.send_signal(signal.SIGINT)
            page.wait(timeout=60)
        self.times["review: first rows + 3 decisions"] = seconds = time.monotonic() - started
        print(f"{seconds:8.1f} s  review: first rows + 3 decisions", flush=True)
        return seconds


def _call(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"X-Review-Token": KEY})
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return dict(json.loads(answer.read()))
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


PETS = (
    "mkdir -p pets/cat pets/space"
    " && cp sample_images/chelsea.png sample_images/coffee.png pets/cat/"
    " && cp sample_images/rocket.jpg sample_images/astronaut.png pets/space/"
)
LEFT = (
    "tiny-random",
    "sorted",
    "labels.csv",
    "labels.csv.review.jsonl",
    "corrected.csv",
    "examples",
    "again.csv",
    "pets",
)


def offline_and_loop(steps: Steps) -> None:
    run, model = steps.run, " ".join(MODEL)
    label = f"clipcls label sample_images --labels '{LABELS}' {model}"
    for name in LEFT:  # what an earlier round left: each round starts as the first did
        shutil.rmtree(steps.clone / name, ignore_errors=True)
        (steps.clone / name).unlink(missing_ok=True)
    run(
        "models export --random --tiny",
        "clipcls models export ViT-B-32 tiny-random --random --tiny",
    )
    run("first offline predict", f"clipcls predict sample_images --labels '{LABELS}' {model}")
    run("label", f"{label} --top-k 2 -o labels.csv -q")
    steps.review()
    run("review --export", "clipcls review labels.csv --export corrected.csv")
    run("review --export-support", "clipcls review labels.csv --export-support examples")
    run("label --support", f"{label} --support examples -o again.csv -q")
    run("evaluate --shots 1", f"{PETS} && clipcls evaluate pets {model} --shots 1 -q")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", type=int, default=2, help="spinning processes (default 2)")
    parser.add_argument("--no-tests", action="store_true", help="skip the test suite (~4-8 min)")
    parser.add_argument("--compare", action="store_true", help="steps 3-4 again without load")
    args = parser.parse_args()
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.load)]
    for spinner in spinners:
        spinner.start()
    print(f"{os.cpu_count()} cores, {args.load} spinning processes", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        clone, home = Path(folder) / "clipcls", Path(folder) / "home"
        home.mkdir()
        steps = Steps(clone, home)
        steps.run("git clone", f"git clone -q {REPO} {clone}", cwd=Path(folder))
        steps.run("install (README)", "python3 -m venv .venv && .venv/bin/pip install -q '.[test]'")
        if not args.no_tests:
            steps.run("tests (README)", ".venv/bin/pytest -q -p no:cacheprovider")
        offline_and_loop(steps)
        loaded = dict(steps.times)
        for spinner in spinners:
            spinner.terminate()
        if args.compare:
            print("again without load:", flush=True)
            steps.times = {}
            fresh = Path(folder) / "home-unloaded"  # an empty cache again, as the first round had
            fresh.mkdir()
            steps.env["HOME"] = str(fresh)
            offline_and_loop(steps)
            for name, seconds in steps.times.items():
                print(f"  {name:38} loaded/unloaded {loaded[name] / seconds:4.2f}x")
        print(f"total, loaded: {sum(loaded.values()):.0f} s")


if __name__ == "__main__":
    main()
