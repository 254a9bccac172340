"""Search over images already embedded: a local query, a warm server, and dedupe, side by side.

Run: python benchmarks/search.py [--images 10000] [--runs 3] [--synthetic]   (needs '.[serve]')

ViT-B-32 with random weights (speed.py's make_model), all on this machine, in one run:
0. The data, made once into benchmarks/data/search-N: N small distinct JPEGs (160x120, about
   5 KB: crops of the sample photos with seeded noise) and a cache holding their embeddings,
   from one real `clipcls label` run over them (timed, printed; reused by later runs), or with
   --synthetic from a real run over 64 of them (it records the model's image cache key) and
   random unit vectors put under that key for the rest (seconds, where the real run takes
   minutes on a busy 2-core machine).
1. (a) `clipcls search DIR "a red car" -k 20` locally, each a whole process, on a copy of that
   cache: a first run (the query's text not cached yet: the model loads), then --runs more with
   everything cached: wall seconds and whether torch was imported (goal: <= 1 s, no torch).
2. (b) The same query through a warm `clipcls serve` on 127.0.0.1 (started here on its own copy
   of the cache, stopped at the end), each client a whole process with an empty cache of its
   own (so the server answers, not the client's cache): wall seconds, and the HTTP time of the
   requests the client made, timed by a recording proxy between the two (goal: <= 0.3 s);
   beside each, the same query run by the full command line (Typer, numpy: `--no-cache`
   is an option its fast path leaves to it), to show what the fast path saves.
3. (c) dedupe of 100,000 embeddings like cached ones (unit float16 rows, with planted
   near-duplicate groups), in this process through clipcls.search.dedupe (goal: <= 10 s).
A step whose command or module is not in this clipcls prints "not available". A table of the
figures against their goals ends the run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import free_port  # noqa: E402
from speed import make_model  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
QUERY = "a red car"
PER_FOLDER = 1000  # images per subfolder of the generated set
PIN = ("--precision", "fp32", "--device", "cpu")  # one image cache key for every step
RUN = (  # the CLI, then whether torch was ever imported, on stderr
    "import atexit, sys\n"
    "atexit.register(lambda: print('torch:', 'torch' in sys.modules, file=sys.stderr))\n"
    "from clipcls.cli import main\n"
    "sys.argv = ['clipcls', *sys.argv[1:]]\n"
    "main()\n"
)
GOALS = {"(a)": 1.0, "(b)": 0.3, "(c)": 10.0}


@dataclass(frozen=True)
class Record:
    """One request that went through the proxy, and how long the server took over it."""

    method: str
    path: str
    status: int
    started: float  # time.perf_counter() when it was sent upstream
    seconds: float


class RecordingProxy:
    """A loopback HTTP proxy in front of one server that records each request's time (from
    the request sent upstream to the whole answer read): the HTTP time of a client's run,
    whatever endpoints it uses."""

    def __init__(self, upstream: str) -> None:
        self.records: list[Record] = []
        target = urllib.parse.urlsplit(upstream)
        records = self.records

        class Forward(BaseHTTPRequestHandler):
            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                started = time.perf_counter()
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=600)
                connection.request(self.command, self.path, body or None, headers)
                answer = connection.getresponse()
                data = answer.read()
                seconds = time.perf_counter() - started
                records.append(Record(self.command, self.path, answer.status, started, seconds))
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                connection.close()

            do_GET = do_POST = do_PUT = do_DELETE = forward

            def log_message(self, format: str, *args: object) -> None:
                pass  # stderr stays the report's

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def busy(records: list[Record]) -> float:
    """Seconds during which at least one request was in flight (the client keeps two out at
    once: their sum would count the overlap twice)."""
    total, reached = 0.0, float("-inf")
    for record in sorted(records, key=lambda record: record.started):
        end = record.started + record.seconds
        total += max(0.0, end - max(record.started, reached))
        reached = max(reached, end)
    return total


def make_small_images(count: int, folder: Path) -> Path:
    """count distinct ~5 KB JPEGs under folder/images, written once."""
    import numpy as np
    from PIL import Image

    images = folder / "images"
    done = images / ".complete"
    if done.exists():
        return images.resolve()
    shutil.rmtree(images, ignore_errors=True)
    sources = [Image.open(p).convert("RGB") for p in sorted(SAMPLES.glob("*.[jp][pn]g"))]
    rng = np.random.default_rng(0)
    for i in range(count):
        source = sources[i % len(sources)]
        width, height = source.size
        w, h = int(width * rng.uniform(0.4, 1)), int(height * rng.uniform(0.4, 1))
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        crop = source.crop((x, y, x + w, y + h)).resize((160, 120), Image.BILINEAR)
        pixels = np.asarray(crop, dtype=np.int16) + rng.integers(-6, 7, (120, 160, 3), np.int16)
        target = images / f"{i // PER_FOLDER:03d}" / f"{i:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(target, quality=80)
    done.touch()
    return images.resolve()  # the cache keys absolute paths: one spelling of them


def embedded_cache(images: Path, model: Path, folder: Path) -> tuple[Path, str]:
    """A cache holding every image's embedding, from one `clipcls label` run (done once), and
    how long that run took."""
    cache, record = folder / "cache", folder / "embedded.json"
    if record.exists():
        seconds = json.loads(record.read_text())["seconds"]
        return cache, f"{seconds:.1f} s (an earlier run's; reused)"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "CLIPCLS_CACHE_DIR": str(cache)}
    command = ["label", str(images), "--labels", "cat,dog", "--model", f"local-dir:{model}"]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "clipcls", *command, *PIN, "-q", "-o", str(folder / "label.csv")],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the embedding run failed:\n{done.stderr}")
    record.write_text(json.dumps({"seconds": seconds}))
    return cache, f"{seconds:.1f} s (this run)"


def synthetic_cache(images: Path, model: Path, folder: Path, sample: int = 64) -> tuple[Path, str]:
    """A cache as `embedded_cache` leaves it, faster: a real `clipcls label` run over the first
    sample images (timed: the rate printed) records the model and its image cache key, and
    every other image gets a random unit embedding put under that key (made once)."""
    import numpy as np

    from clipcls.cache import EmbeddingCache
    from clipcls.filekey import FileKey
    from clipcls.recorded import record_key
    from clipcls.settings import ModelSettings

    cache, record = folder / "cache-synthetic", folder / "synthetic.json"
    if record.exists():
        return cache, json.loads(record.read_text())["rate"] + " (an earlier run's; reused)"
    shutil.rmtree(cache, ignore_errors=True)
    paths = sorted(str(path) for path in images.glob("*/*.jpg"))
    env = {**os.environ, "CLIPCLS_CACHE_DIR": str(cache)}
    command = ["label", *paths[:sample], "--labels", "cat,dog", "--model", f"local-dir:{model}"]
    seconds = whole(*command, *PIN, "-q", "-o", str(folder / "sample.csv"), env=env, cwd=folder)
    if seconds[2] is not None:
        raise SystemExit(f"the sample embedding run failed: {seconds[2]}")
    settings = ModelSettings(f"local-dir:{model}", None, "cpu", "fp32")  # type: ignore[arg-type]
    store = EmbeddingCache(cache)
    key = json.loads(store.get_record(record_key(settings)) or "{}").get("image_cache_key")
    if key is None:
        raise SystemExit("the sample run recorded no model: is --precision/--device pinned?")
    rng = np.random.default_rng(0)
    for start in range(sample, len(paths), 1000):
        chunk = paths[start : start + 1000]
        vectors = rng.standard_normal((len(chunk), 512)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.put_images(key, [(FileKey.of(p), v) for p, v in zip(chunk, vectors, strict=True)])  # type: ignore[misc]
    store.close()
    rate = f"{sample} real in {seconds[0]:.1f} s whole process, the rest synthetic"
    record.write_text(json.dumps({"rate": rate}))
    return cache, rate + " (this run)"


def whole(*args: str, env: dict[str, str], cwd: Path) -> tuple[float, bool | None, str | None]:
    """Seconds of one whole clipcls process, whether it imported torch, and its last error
    line (None if it succeeded)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", RUN, *args], env=env, cwd=cwd, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    lines = done.stderr.strip().splitlines() or [""]
    torch = lines[-1] == "torch: True" if lines[-1].startswith("torch:") else None
    failure = next((line for line in reversed(lines) if not line.startswith("torch:")), "")
    return seconds, torch, None if done.returncode == 0 else f"exit {done.returncode}: {failure}"


def has_command(command: str, env: dict[str, str]) -> bool:
    """Whether this clipcls has the command."""
    done = subprocess.run(
        [sys.executable, "-m", "clipcls", command, "--help"], env=env, capture_output=True
    )
    return done.returncode == 0


def local_search(images: Path, model: Path, env: dict[str, str], scratch: Path, runs: int) -> str:
    """(a): a first run, then runs more with the query cached; their median and torch."""
    args = ("search", str(images), QUERY, "-k", "20", "--model", f"local-dir:{model}", *PIN)
    first, _, failed = whole(*args, env=env, cwd=scratch)
    if failed:
        return f"failed: {failed}"
    timed = [whole(*args, env=env, cwd=scratch) for _ in range(runs)]
    if any(failed for _, _, failed in timed):
        return f"failed: {next(failed for _, _, failed in timed if failed)}"
    seconds = [s for s, _, _ in timed]
    torch = {t for _, t, _ in timed}
    print(f"(a) first run (query text not cached): {first:.2f} s; then {fmt(seconds)} s")
    return f"{statistics.median(seconds):.2f} s, torch imported: {' / '.join(map(str, torch))}"


def start_server(model: Path, root: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:  # type: ignore[type-arg]
    """`clipcls serve` on a free loopback port, once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "clipcls", "serve", "--model", f"local-dir:{model}", *PIN]
    command += ["--port", str(port), "--allow-dir", str(root)]
    server = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    probe = ["predict", str(next(root.glob("*/*.jpg"))), "--labels", "cat,dog", "--server", url]
    deadline = time.monotonic() + 300
    while whole(*probe, "-q", env=env, cwd=root)[2] is not None:
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise SystemExit("the server did not start")
        time.sleep(0.5)
    return server, url


def served_search(images: Path, model: Path, base: dict[str, str], scratch: Path, runs: int) -> str:
    """(b): the query through a warm server, behind a proxy that times its requests."""
    server_env = {**base, "CLIPCLS_CACHE_DIR": str(scratch / "server-cache")}
    shutil.copytree(base["CLIPCLS_CACHE_DIR"], server_env["CLIPCLS_CACHE_DIR"])
    server, url = start_server(model, images, server_env)
    proxy = RecordingProxy(url)
    try:
        walls, http, full = [], [], []
        for run in range(runs + 1):  # the first warms the server's search: not counted
            env = {**base, "CLIPCLS_CACHE_DIR": str(scratch / f"client-cache-{run}")}
            proxy.records.clear()
            args = ("search", str(images), QUERY, "-k", "20", "--server", proxy.url)
            seconds, torch, failed = whole(*args, env=env, cwd=scratch)
            if failed:
                return f"failed: {failed}"
            if run:
                walls.append(seconds)
                http.append(busy(proxy.records))
                requests = len(proxy.records)
                # side by side: the full command line (Typer, numpy), which any option the
                # fast path does not take runs; --no-cache changes nothing a served search reads
                full.append(whole(*args, "--no-cache", env=env, cwd=scratch)[0])
    finally:
        proxy.close()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    print(f"(b) through the server: {fmt(walls)} s whole process; HTTP in flight {fmt(http)} s")
    print(f"    the same by the full command line (--no-cache): {fmt(full)} s")
    return (
        f"{statistics.median(walls):.2f} s whole process (HTTP in flight"
        f" {statistics.median(http):.3f} s, {requests} requests; the full command line"
        f" {statistics.median(full):.2f} s), torch imported: {torch}"
    )


def dedupe_speed(count: int = 100_000, dim: int = 512) -> str:
    """(c): dedupe of count unit float16 rows in this process (rule: first path, so that no
    file is read), if this clipcls has it."""
    try:
        from clipcls.search.dedupe import KeepRule, duplicate_groups
    except ImportError:
        return "not available (no clipcls.search.dedupe here)"
    import numpy as np

    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((count, dim)).astype(np.float32)
    copies = rng.choice(count, size=count // 10, replace=False)  # 10% near copies of others
    originals = rng.choice(count, size=len(copies))
    matrix[copies] = matrix[originals] + 0.1 * rng.standard_normal((len(copies), dim))
    matrix = (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float16)
    paths = [f"/images/{i:06d}.jpg" for i in range(count)]
    started = time.perf_counter()
    groups = duplicate_groups(paths, matrix, 0.95, KeepRule.FIRST)
    seconds = time.perf_counter() - started
    return (
        f"{seconds:.2f} s ({len(groups):,} groups, {sum(len(g.members) for g in groups):,} images)"
    )


def fmt(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="embed a sample for real and put random embeddings for the rest (minutes faster)",
    )
    args = parser.parse_args()
    model = make_model()
    folder = DATA / f"search-{args.images}"
    images = make_small_images(args.images, folder)
    prepare = synthetic_cache if args.synthetic else embedded_cache
    cache, embedding = prepare(images, model, folder)
    print(
        f"# ViT-B-32 random weights, {args.images} JPEGs of ~5 KB, {os.cpu_count()} cores, ", end=""
    )
    print(f"Python {sys.version.split()[0]}; embeddings: {embedding}")
    results: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as name:
        scratch = Path(name)
        base = {**os.environ, "CLIPCLS_CACHE_DIR": str(scratch / "cache")}
        shutil.copytree(cache, base["CLIPCLS_CACHE_DIR"])
        if not has_command("search", base):
            results["(a)"] = results["(b)"] = "not available (no `clipcls search` here)"
        else:
            results["(a)"] = local_search(images, model, base, scratch, args.runs)
            results["(b)"] = served_search(images, model, base, scratch, args.runs)
    results["(c)"] = dedupe_speed()
    report(results, args.images)


def report(results: dict[str, str], count: int) -> None:
    names = {
        "(a)": f'(a) `clipcls search DIR "{QUERY}"`, {count:,} cached images, query cached',
        "(b)": "(b) the same through a warm `clipcls serve`",
        "(c)": "(c) dedupe of 100,000 cached-like embeddings, in-process",
    }
    print("| step | measured | goal |\n| --- | --- | --- |")
    for key, result in results.items():
        goal = f"<= {GOALS[key]:g} s" + (", no torch" if key == "(a)" else "")
        print(f"| {names[key]} | {result} | {goal} |")


if __name__ == "__main__":
    main()
