"""Start-up without torch: whole `clipcls` processes on the torch runtime and on ONNX Runtime.

Run: python benchmarks/startup.py [--repeat 3] [--images 48]   (needs pip install '.[onnx]')

A ViT-B-32 with random weights (same cost as the trained one) is exported in a temporary folder
(`clipcls models export ViT-B-32 DIR --random`, then `... local-dir:DIR DIR2 --onnx`), and each
scenario runs as a whole process, torch then ONNX (the order swapped every repeat), `--repeat`
times; the table shows medians of wall seconds and of the child's peak RSS (os.wait4):

(a) `predict NEW.jpg --labels cat,dog,car`, prompts cached (3 labels x 80 templates): a new
    12 MP JPEG each run (a fresh inode, so no cache holds it);
(b) the same with nothing cached (an empty cache folder each run); for ONNX also (b2): no
    embeddings cached but this machine's optimized graphs kept, as any run after the first has;
    and, in-process, the text tower alone on the 240 prompts (model loaded, session open): the
    floor of (b);
(c) a fully cached re-run of (a)'s image;
(d) `label` over 48 12 MP camera JPEGs, prompts cached, images not: whole-process images/s,
    and the marginal rate 47 / (d - a) (start-up and one image taken off); torch fp32 against
    ONNX fp32, plus torch bf16 where the CPU has AMX or AVX512-BF16 (what `--precision auto`
    picks there).

Torch runs pass `--runtime torch --precision fp32` (bf16 for its row); ONNX runs name the export
folder (`--model local-dir:DIR2`). The load average is printed: the machine may be shared.
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
from speed import make_images  # noqa: E402  (the shared generated camera JPEGs)

ROOT = Path(__file__).resolve().parent.parent
MAKE = "import sys; sys.path.insert(0, 'benchmarks'); from speed import make_images; "
MAKE += "make_images(int(sys.argv[1]))"
LABELS = "cat,dog,car"
# The in-process floor of (b): one model, the text tower on 3 labels x 80 templates.
FLOOR = (
    "import sys, time\n"
    "from clipcls.engine.factory import open_model\n"
    "from clipcls.prompts import DEFAULT_TEMPLATES, load_templates\n"
    "from clipcls.settings import ModelSettings\n"
    "model = open_model(ModelSettings(model=sys.argv[1], runtime=sys.argv[2], precision='fp32',"
    " cache_dir=sys.argv[3]))\n"
    "texts = [t for label in 'cat dog car'.split()"
    " for t in load_templates(DEFAULT_TEMPLATES).fill(label)]\n"
    "model.encode_texts(texts[:1])  # opens the tower\n"
    "for _ in range(4):  # the first pass meets each batch shape for the first time\n"
    "    started = time.perf_counter()\n"
    "    model.encode_texts(texts)\n"
    "    print(len(texts), time.perf_counter() - started)\n"
)


def child(args: list[str], cache: Path, cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one whole process.

    Linux keeps a process's peak RSS across exec, and a child forked (vforked) from this
    script starts from this script's: so this script stays small (no torch, no image arrays)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CLIPCLS_CACHE_DIR": str(cache)}
    env.pop("CLIPCLS_RUNTIME", None)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(args)} failed:\n{err.read().decode(errors='replace')}")
    return seconds, usage.ru_maxrss / 1024  # Linux: kilobytes


def clipcls(*args: str) -> list[str]:
    return [sys.executable, "-m", "clipcls", *args]


def make_models(scratch: Path) -> tuple[Path, Path]:
    """The random ViT-B-32 as a local-dir: folder and its ONNX export (parity said on stderr)."""
    source, export = scratch / "vit-b-32", scratch / "vit-b-32-onnx"
    cache = scratch / "export-cache"
    for args in (
        ("models", "export", "ViT-B-32", str(source), "--random"),
        ("models", "export", f"local-dir:{source}", str(export), "--onnx"),
    ):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CLIPCLS_CACHE_DIR": str(cache)}
        started = time.perf_counter()
        done = subprocess.run(clipcls(*args), env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"clipcls {' '.join(args)} failed:\n{done.stderr}")
        lines = done.stderr.splitlines()
        said = "; ".join(line[:150] for line in lines if line.startswith(("parity", "wrote")))
        print(f"# clipcls {' '.join(args[:3])}: {time.perf_counter() - started:.0f} s; {said}")
    return source, export


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (medians)")
    parser.add_argument("--images", type=int, default=48, help="camera JPEGs in (d)")
    options = parser.parse_args()
    from importlib.metadata import version

    from clipcls.engine.hardware import cpuinfo_fast_bf16

    count = max(144, 3 * options.images)  # made in a process of its own: see child()
    subprocess.run([sys.executable, "-c", MAKE, str(count)], check=True, cwd=ROOT)
    camera = [p for p in make_images(count) if p.parent.name == "12MP"]
    camera = camera[: options.images]
    bf16 = cpuinfo_fast_bf16()
    print(
        f"# {os.cpu_count()} cores, torch {version('torch')}, fast bf16 (AMX/AVX512-BF16): "
        f"{bf16}; {load()}"
    )
    with tempfile.TemporaryDirectory(prefix="clipcls-startup-") as temp:
        scratch = Path(temp)
        source, export = make_models(scratch)
        runs = {
            "torch": [
                "--model",
                f"local-dir:{source}",
                "--runtime",
                "torch",
                "--precision",
                "fp32",
            ],
            "onnx": ["--model", f"local-dir:{export}"],
        }
        times: dict[str, list[float]] = {}
        rss: dict[str, list[float]] = {}

        def record(row: str, measured: tuple[float, float]) -> None:
            times.setdefault(row, []).append(measured[0])
            rss.setdefault(row, []).append(measured[1])

        folder = scratch / "album"
        shutil.copytree(camera[0].parent, folder, copy_function=os.link, dirs_exist_ok=True)
        for extra in sorted(folder.glob("*.jpg"))[options.images :]:
            extra.unlink()
        label_runs = dict(runs)
        if bf16:
            label_runs["torch bf16"] = [*runs["torch"][:-1], "bf16"]
        first = scratch / "warm.jpg"
        shutil.copyfile(camera[0], first)  # a copy: (d)'s images stay uncached
        warm = {name: scratch / f"warm-{name}".replace(" ", "-") for name in label_runs}
        for name, model in label_runs.items():  # prompts cached, ONNX's optimized graphs made
            predict = clipcls("predict", str(first), "--labels", LABELS, *model)
            child(predict, warm[name], scratch)
        floor = {name: text_floor(model, scratch / f"floor-{name}") for name, model in runs.items()}
        for repeat in range(options.repeat):
            order = list(runs) if repeat % 2 == 0 else list(reversed(runs))
            one = scratch / f"one-{repeat}.jpg"
            shutil.copyfile(camera[1], one)
            for name in order:  # (a) a new image, then (c) the same again
                predict = clipcls("predict", str(one), "--labels", LABELS, *runs[name])
                record(f"(a) {name}", child(predict, warm[name], scratch))
                record(f"(c) {name}", child(predict, warm[name], scratch))
            for name in order:  # (b) nothing cached
                empty = scratch / f"empty-{name}-{repeat}"
                predict = clipcls("predict", str(one), "--labels", LABELS, *runs[name])
                record(f"(b) {name}", child(predict, empty, scratch))
                if name == "onnx":
                    graphs = scratch / f"graphs-{repeat}"
                    shutil.copytree(warm["onnx"] / "onnx-optimized", graphs / "onnx-optimized")
                    record("(b2) onnx", child(predict, graphs, scratch))
            for name in order + (["torch bf16"] if bf16 else []):
                cache = scratch / f"label-{name}-{repeat}".replace(" ", "-")
                shutil.copytree(warm[name], cache)
                args = ("label", str(folder), "--labels", LABELS, "-o", str(cache / "out.csv"))
                record(
                    f"(d) {name}", child(clipcls(*args, "-q", *label_runs[name]), cache, scratch)
                )
            print(f"# repeat {repeat + 1}: {load()}", flush=True)
        report(times, rss, floor, options.images)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"# this script's own peak RSS, a floor under every RSS above: {own:.0f} MB")


def text_floor(model: list[str], cache: Path) -> tuple[float, float]:
    """Seconds of the text tower alone on the 240 prompts in a process of its own, tower open:
    the first pass (what a cold process pays) and the median of three more."""
    name, runtime = model[1], model[3] if len(model) > 2 else "onnx"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", FLOOR, name, runtime, str(cache)],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"text floor ({runtime}) failed:\n{done.stderr}")
    passes = [float(line.split()[1]) for line in done.stdout.splitlines()]
    return passes[0], statistics.median(passes[1:])


def report(
    times: dict[str, list[float]],
    rss: dict[str, list[float]],
    floor: dict[str, tuple[float, float]],
    n: int,
) -> None:
    median = {row: statistics.median(values) for row, values in times.items()}
    print("\n| run | median s | runs s | peak RSS MB | images/s whole | images/s marginal |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for row, values in times.items():
        spread = " ".join(f"{v:.2f}" for v in values)
        rate = marginal = ""
        if row.startswith("(d)"):
            base = median[f"(a) {row.split()[1]}"]
            rate = f"{n / median[row]:.1f}"
            marginal = f"{(n - 1) / (median[row] - base):.1f}"
        print(
            f"| {row} | {median[row]:.2f} | {spread} | {statistics.median(rss[row]):.0f} "
            f"| {rate} | {marginal} |"
        )
    for name, (first, steady) in floor.items():
        print(
            f"| (b) floor, {name}: text tower alone, 240 prompts, in-process, first pass "
            f"(then steady) | {first:.2f} ({steady:.2f}) | | | | |"
        )
    a_onnx, a_torch = median["(a) onnx"], median["(a) torch"]
    print(
        f"\n(a) ONNX {a_onnx:.2f} s (goal <= 2.0 s: {'met' if a_onnx <= 2.0 else 'missed'}), "
        f"torch/ONNX {a_torch / a_onnx:.1f}x (goal >= 3x: "
        f"{'met' if a_torch / a_onnx >= 3 else 'missed'})"
    )
    for kind, slope in (("whole", 0.0), ("marginal", 1.0)):
        rates = {}
        for name in ("torch", "onnx"):
            base = median[f"(a) {name}"] * slope
            rates[name] = (n - slope) / (median[f"(d) {name}"] - base)
        ratio = rates["onnx"] / rates["torch"]
        print(
            f"(d) {kind}: ONNX {rates['onnx']:.1f} img/s, torch fp32 {rates['torch']:.1f} img/s, "
            f"ONNX/torch {ratio:.2f} (goal >= 0.90: {'met' if ratio >= 0.9 else 'missed'})"
        )
    print(f"# {load()}")


if __name__ == "__main__":
    main()
