"""Start-up against answers: a fully cached re-run that loads no model, and a warm server.

Run: python benchmarks/serve.py [--images 192] [--requests 100]   (needs pip install '.[serve]')

ViT-B-32 with random weights, all on this machine, in one run:
1. `clipcls label` over 48 12 MP camera JPEGs, whole process: cold (empty embedding cache),
   then again over the warm cache; whether the re-run imported torch; whether the rows match.
2. `clipcls serve` on a free loopback port: its start-up; whole-process `clipcls predict
   one.jpg --server URL` (three runs); the local engine's steady state (model loaded, this
   process, cache off) against 4 concurrent clients through the server on the same images
   (4 processes, each running clipcls's --server client over a quarter of the files, after
   one warm-up request each; files sent by path, as a client on the server's machine does,
   and as bytes); then a
   bounded load test: a fixed count of one-image requests from 4 threads, p50/p99 latency and
   the count of errors. Last, SIGTERM with a long text request in flight: seconds until the
   server has exited (LitServe's own wait was 30 s; the test suite only guards against a hang).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import make_images, make_model  # noqa: E402  (the shared generated data)

LABELS = "cat,dog,car"
# Runs the CLI, then prints on stderr whether torch was ever imported.
RUN = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('torch:', 'torch' in sys.modules, file=sys.stderr))\n"
    "from clipcls.cli import main\n"
    "sys.argv = ['clipcls', *sys.argv[1:]]\n"
    "main()\n"
)


def whole(*args: str, env: dict[str, str], cwd: str) -> tuple[float, bool]:
    """Seconds of one whole clipcls process, and whether it imported torch."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", RUN, *args], env=env, cwd=cwd, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"clipcls {' '.join(args)} failed:\n{done.stderr}")
    return seconds, done.stderr.strip().splitlines()[-1] == "torch: True"


def cached_rerun(camera: list[Path], model: Path, env: dict[str, str], scratch: str) -> None:
    folder = str(camera[0].parent)
    args = ("label", folder, "--labels", LABELS, "--model", f"local-dir:{model}", "-q")
    cold, _ = whole(*args, "-o", "cold.csv", env=env, cwd=scratch)
    warm, torch = whole(*args, "-o", "warm.csv", env=env, cwd=scratch)
    same = Path(scratch, "cold.csv").read_bytes() == Path(scratch, "warm.csv").read_bytes()
    print(f"## label, {len(camera)} camera JPEGs (12 MP), whole process")
    print(f"cold (empty cache): {cold:.2f} s")
    print(
        f"re-run (every embedding cached): {warm:.2f} s; torch imported: {torch}; rows same: {same}"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def post(url: str, body: dict) -> dict:  # type: ignore[type-arg]
    request = urllib.request.Request(url + "/v1/predict", data=json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=300) as answer:
        return dict(json.loads(answer.read()))


def start_server(
    model: Path, root: Path, env: dict[str, str]
) -> tuple[subprocess.Popen, str, float]:  # type: ignore[type-arg]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "clipcls", "serve", "--model", f"local-dir:{model}"]
    command += ["--port", str(port), "--allow-dir", str(root)]
    started = time.perf_counter()
    server = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    while True:
        try:
            with urllib.request.urlopen(url + "/v1/info", timeout=5) as answer:
                if answer.status == 200:
                    return server, url, time.perf_counter() - started
        except OSError:
            if server.poll() is not None:
                raise SystemExit("the server did not start") from None
            time.sleep(0.1)


def local_rate(images: list[Path], model: Path) -> float:
    """Images/s of the local engine once loaded (first batch not counted), cache off."""
    from clipcls.classify import Classifier
    from clipcls.engine.model import ClipModel
    from clipcls.settings import ModelSettings

    classifier = Classifier(ClipModel(ModelSettings(f"local-dir:{model}")), LABELS.split(","))
    list(classifier.classify_paths(images[:32]))  # warm-up
    started = time.perf_counter()
    count = sum(1 for _ in classifier.classify_paths(images))
    return count / (time.perf_counter() - started)


def _client(url: str, share: list[str], by_path: bool) -> int:
    """One client process: clipcls's own --server client over its share of the files."""
    from clipcls.client.predict import RemoteClassifier, ServerClient
    from clipcls.labels import Label
    from clipcls.prompts import load_templates

    labels = [Label.plain(name) for name in LABELS.split(",")]
    remote = RemoteClassifier(ServerClient(url), labels, load_templates("openai"))
    remote.shared = by_path  # same machine and --allow-dir: paths; else the files' bytes
    return sum(1 for p in remote.classify_paths(share) if p.error is None)


def through_server(url: str, images: list[Path], by_path: bool, clients: int = 4) -> float:
    """Images/s with `clients` processes, each classifying its share through the server."""
    shares = [[str(p) for p in images[i::clients]] for i in range(clients)]
    context = multiprocessing.get_context("spawn")  # this process holds torch's thread pools
    with ProcessPoolExecutor(clients, mp_context=context) as pool:
        list(pool.map(_client, [url] * clients, [[str(images[0])]] * clients, [by_path] * clients))
        started = time.perf_counter()
        done = sum(pool.map(_client, [url] * clients, shares, [by_path] * clients))
        seconds = time.perf_counter() - started
    assert done == len(images), f"{len(images) - done} images failed"
    return len(images) / seconds


def load_test(url: str, images: list[Path], requests: int) -> tuple[float, float, int]:
    """p50 and p99 latency (ms) of `requests` one-image requests from 4 threads; errors."""

    def one(i: int) -> float | None:
        path = images[i % len(images)]
        started = time.perf_counter()
        try:
            answer = post(url, {"images": [{"path": str(path)}], "labels": LABELS.split(",")})
        except OSError:
            return None
        ok = "predictions" in answer["predictions"][0]
        return (time.perf_counter() - started) * 1000 if ok else None

    with ThreadPoolExecutor(4) as pool:
        latencies = list(pool.map(one, range(requests)))
    good = sorted(t for t in latencies if t is not None)
    p99 = good[min(len(good) - 1, int(len(good) * 0.99))]
    return statistics.median(good), p99, len(latencies) - len(good)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    model = make_model()
    camera = [p for p in make_images(144) if p.parent.name == "12MP"][:48]
    mix = make_images(600)
    images = [p for i, p in enumerate(mix) if i % max(1, len(mix) // args.images) == 0]
    images = images[: args.images]
    print(f"# ViT-B-32 random weights, {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "CLIPCLS_CACHE_DIR": str(Path(scratch, "cache"))}
        cached_rerun(camera, model, env, scratch)
        steady = local_rate(images, model)
        server, url, startup = start_server(model, images[0].parent.parent, env)
        try:
            print(f"\n## clipcls serve (start-up until /v1/info answers: {startup:.1f} s)")
            one = [
                whole(
                    "predict",
                    str(camera[0]),
                    "--labels",
                    LABELS,
                    "--server",
                    url,
                    "-f",
                    "jsonl",
                    env=env,
                    cwd=scratch,
                )
                for _ in range(3)
            ]
            times = ", ".join(f"{seconds:.2f}" for seconds, _ in one)
            print(
                f"predict one.jpg --server, whole process: {times} s; torch imported: {one[0][1]}"
            )
            by_path = through_server(url, images, by_path=True)
            by_bytes = through_server(url, images, by_path=False)
            mix_name = f"{len(images)} images (12 MP / 2 MP / VGA mix)"
            print(f"{mix_name}: local steady state {steady:.1f} images/s")
            for how, rate in (("by path", by_path), ("as bytes", by_bytes)):
                share = f"{rate / steady:.0%} of local"
                print(f"4 clients through the server, files {how}: {rate:.1f} images/s ({share})")
            p50, p99, errors = load_test(url, images, args.requests)
            what = f"load test, {args.requests} one-image requests from 4 threads"
            print(f"{what}: p50 {p50:.0f} ms, p99 {p99:.0f} ms, {errors} errors")
        finally:
            seconds = stop_in_flight(server, url)
            print(f"SIGTERM with a request in flight: stopped in {seconds:.2f} s")


def stop_in_flight(server: subprocess.Popen, url: str) -> float:  # type: ignore[type-arg]
    """Seconds from SIGTERM, sent while the server embeds 4,000 long prompts, to its exit."""
    texts = [f"a photo of thing number {i}" + " seen from far away" * 6 for i in range(4000)]
    pool = ThreadPoolExecutor(1)
    pool.submit(lambda: _quietly(post, url, {"texts": texts}))
    time.sleep(0.5)
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=120)
    seconds = time.monotonic() - started
    pool.shutdown(wait=True)
    return seconds


def _quietly(call: object, *args: object) -> None:
    try:
        call(*args)  # type: ignore[operator]
    except OSError:
        pass  # the server stopped under it: expected


if __name__ == "__main__":
    main()
