"""clipcls against the loops people write, measured side by side in one run.

Run: python benchmarks/speed.py [--images 1800] [--skip-hf]   (about 10 minutes on 2 cores)
Needs: the project installed, plus `pip install transformers` for the Hugging Face pipeline.

It generates a deterministic JPEG set (a third each 12 MP, 2 MP and VGA, made from the sample
photos with seeded noise; nothing is downloaded) and a ViT-B-32 with random weights (same
architecture and cost as the trained one) as a local-dir: model, then runs each method in its own
process and reports seconds, images/s, peak RSS and ratios:

  openclip   the batched loop from open_clip's README: PIL decode, open_clip preprocess, fp32,
             text classifier from the same 80 templates with build_zero_shot_classifier
  hf         transformers' zero-shot-image-classification pipeline, same architecture
  cold       clipcls, empty embedding cache (includes encoding the 80-template prompts)
  warm       clipcls again over the same images with new labels, cache warm
  ceiling    encode_image alone on ready tensors at clipcls's precision and threads

Times exclude process start and model loading (the same for every method); the end-to-end
`clipcls predict` wall times are printed too. The agreement section measures what the fast paths
change: draft-decoded vs fully decoded image embeddings, bf16 vs fp32 image embeddings, and
length-truncated vs padded text embeddings (cosines).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
SIZES = {"12MP": (4000, 3000), "2MP": (1920, 1080), "VGA": (640, 480)}
DISTINCT = 12  # distinct pictures per size; the rest are hard links (decoded all the same)
SOURCES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "china.jpg", "flower.jpg"]
LABELS = ["cat", "dog", "car"]
NEW_LABELS = ["rocket", "cup of coffee", "flower"]
BATCH = 32


def make_images(count: int) -> list[Path]:
    """The benchmark set, generated once into benchmarks/data/images-N."""
    import numpy as np
    from PIL import Image

    folder = DATA / f"images-{count}"
    done = folder / ".complete"
    if done.exists():
        return sorted(folder.glob("*/*.jpg"))
    shutil.rmtree(folder, ignore_errors=True)
    samples = Path(__file__).resolve().parent.parent / "sample_images"
    rng = np.random.default_rng(0)
    for name, (width, height) in SIZES.items():
        (folder / name).mkdir(parents=True)
        originals = []
        for i in range(DISTINCT):
            source = Image.open(samples / SOURCES[i % len(SOURCES)]).convert("RGB")
            picture = np.asarray(source.resize((width, height), Image.BICUBIC), dtype=np.int16)
            picture = picture + rng.integers(-10, 11, size=picture.shape, dtype=np.int16)
            target = folder / name / f"{i:04d}.jpg"
            Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(target, quality=90)
            originals.append(target)
        for i in range(DISTINCT, count // len(SIZES)):
            os.link(originals[i % DISTINCT], folder / name / f"{i:04d}.jpg")
    done.touch()
    return sorted(folder.glob("*/*.jpg"))


def make_model() -> Path:
    """ViT-B-32 with random weights as a local-dir: folder, written once."""
    folder = DATA / "vit-b-32-random"
    if (folder / "open_clip_config.json").exists():
        return folder
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32")
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_cfg": open_clip.get_model_config("ViT-B-32"),
        "preprocess_cfg": open_clip.get_model_preprocess_cfg(model),
    }
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return folder


# ---- the methods, each run in a fresh process --------------------------------------------


def run_openclip(images: list[Path], model_dir: Path) -> dict[str, float]:
    import open_clip
    import torch
    from open_clip.zero_shot_classifier import build_zero_shot_classifier
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        classifier = build_zero_shot_classifier(model, tokenizer, LABELS, OPENAI_IMAGENET_TEMPLATES)
        for first in range(0, len(images), BATCH):
            batch = torch.stack([preprocess(Image.open(p)) for p in images[first : first + BATCH]])
            features = model.encode_image(batch, normalize=True)
            (100.0 * features @ classifier).softmax(dim=-1)
    return {"seconds": time.perf_counter() - start}


def run_hf(images: list[Path], model_dir: Path) -> dict[str, float]:
    import open_clip
    import torch
    from PIL import Image
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer, pipeline

    # Build the Hugging Face tokenizer files from open_clip's bundled BPE: nothing downloaded.
    bpe = open_clip.tokenizer.SimpleTokenizer()
    vocab = DATA / "hf-tokenizer"
    vocab.mkdir(exist_ok=True)
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    (vocab / "vocab.json").write_text(
        json.dumps({names.get(k, k): v for k, v in bpe.encoder.items()})
    )
    ranked = sorted(bpe.bpe_ranks.items(), key=lambda item: item[1])
    (vocab / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m, _ in ranked))
    tokenizer = CLIPTokenizer(str(vocab / "vocab.json"), str(vocab / "merges.txt"))
    config = CLIPConfig(
        text_config={
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_attention_heads": 8,
            "num_hidden_layers": 12,
            "max_position_embeddings": 77,
        },
        vision_config={
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
            "patch_size": 32,
            "image_size": 224,
        },
        projection_dim=512,
    )
    torch.manual_seed(0)
    classifier = pipeline(
        "zero-shot-image-classification",
        model=CLIPModel(config).eval(),
        tokenizer=tokenizer,
        image_processor=CLIPImageProcessor(),
        device="cpu",
    )
    start = time.perf_counter()
    pictures = (Image.open(p) for p in images)
    for _ in classifier(pictures, candidate_labels=LABELS, batch_size=BATCH):
        pass
    return {"seconds": time.perf_counter() - start}


def _classifier(model_dir: Path, labels: list[str], cache: Path):  # type: ignore[no-untyped-def]
    from clipcls import Classifier, EmbeddingCache, ModelSettings
    from clipcls.engine.model import ClipModel

    encoder = ClipModel(ModelSettings(model=f"local-dir:{model_dir}"))
    gc.freeze()  # as the clipcls commands do after loading the model
    return encoder, lambda: Classifier(encoder, labels, "openai", BATCH, EmbeddingCache(cache))


def run_clipcls(images: list[Path], model_dir: Path, cache: Path, new_labels: bool) -> dict:
    import torch

    encoder, build = _classifier(model_dir, NEW_LABELS if new_labels else LABELS, cache)
    start = time.perf_counter()
    classifier = build()
    text_done = time.perf_counter()
    done = [time.perf_counter() for _ in classifier.classify_paths(images)]
    end = time.perf_counter()
    steady = (len(images) - BATCH) / (end - done[BATCH - 1]) if len(done) > BATCH else 0.0
    by_size: dict[
        str, float
    ] = {}  # images/s within each size's run of images (sorted by folder: contiguous)
    for size in SIZES:
        rows = [i for i, path in enumerate(images) if path.parent.name == size]
        first = max(rows[0], BATCH) - 1  # the first batch warms the model up: left out
        by_size[size] = (rows[-1] - first) / (done[rows[-1]] - done[first])
    return {
        "seconds": end - start,
        "text_seconds": text_done - start,
        "steady_ips": steady,
        "by_size_ips": by_size,
        "precision": encoder.info.precision,
        "workers": encoder.plan.decode_workers,
        "torch_threads": torch.get_num_threads(),  # as the engine set them
    }


def run_ceiling(model_dir: Path) -> dict[str, float]:
    import numpy as np
    import torch

    from clipcls import ModelSettings
    from clipcls.engine.model import ClipModel

    encoder = ClipModel(ModelSettings(model=f"local-dir:{model_dir}"))
    arrays = [
        np.random.default_rng(i).integers(0, 255, (224, 224, 3), dtype=np.uint8)
        for i in range(BATCH)
    ]

    def images_per_second() -> float:
        encoder.encode_prepared(arrays)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < 10:
            encoder.encode_prepared(arrays)
            done += BATCH
        return done / (time.perf_counter() - start)

    ips = images_per_second()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # how well the model alone uses the cores: overlap's headroom
    return {"ips": ips, "one_thread_ips": images_per_second(), "threads": threads}


def run_agreement(images: list[Path], model_dir: Path) -> dict[str, dict[str, float]]:
    import numpy as np

    from clipcls import ModelSettings, Precision
    from clipcls.engine.model import ClipModel
    from clipcls.pipeline import prepare_path
    from clipcls.prompts import load_templates

    def embed(encoder: ClipModel, paths: list[Path]) -> np.ndarray:
        return encoder.encode_prepared([prepare_path(encoder, p).tensor for p in paths])

    name = f"local-dir:{model_dir}"
    default = ClipModel(ModelSettings(model=name))  # auto precision, draft decoding
    precision = Precision(default.info.precision)
    exact = ClipModel(ModelSettings(model=name, precision=precision, exact_decode=True))
    draft32 = ClipModel(ModelSettings(model=name, precision=Precision.FP32))
    fp32 = ClipModel(ModelSettings(model=name, precision=Precision.FP32, exact_decode=True))
    result: dict[str, dict[str, float]] = {}
    distinct = [p for p in images if int(p.stem) < DISTINCT]

    def compare(name: str, a: ClipModel, b: ClipModel, paths: list[Path]) -> None:
        cosine = (embed(a, paths) * embed(b, paths)).sum(axis=1)
        result[name] = {"min": float(cosine.min()), "mean": float(cosine.mean())}

    for size in SIZES:
        group = [p for p in distinct if p.parent.name == size]
        compare(f"draft vs exact decode (fp32), {size}", draft32, fp32, group)
    compare(f"{precision.value} vs fp32 weights (exact decode)", exact, fp32, distinct)
    compare(f"default ({precision.value} + draft) vs fp32 + exact", default, fp32, distinct)
    prompts = [t for label in LABELS for t in load_templates("openai").fill(label)]
    cosine = (fp32.encode_texts(prompts) * fp32.encode_texts(prompts, truncate=False)).sum(axis=1)
    result["truncated vs padded text (fp32)"] = {
        "min": float(cosine.min()),
        "mean": float(cosine.mean()),
    }
    return result


# ---- the driver ------------------------------------------------------------------------


def child(method: str, count: int, cache: str) -> None:
    images = make_images(count)
    model_dir = make_model()
    if method == "openclip":
        out = run_openclip(images, model_dir)
    elif method == "hf":
        out = run_hf(images, model_dir)
    elif method in ("cold", "warm"):
        out = run_clipcls(images, model_dir, Path(cache), new_labels=method == "warm")
    elif method == "ceiling":
        out = run_ceiling(model_dir)
    else:
        out = run_agreement(images, model_dir)
    print("RESULT " + json.dumps(out))


def measure(method: str, count: int, cache: Path) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        method,
        "--images",
        str(count),
        "--cache",
        str(cache),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    output, errors = process.stdout.read(), process.stderr.read()  # type: ignore[union-attr]
    if status != 0:
        raise SystemExit(f"{method} failed:\n{errors[-3000:]}")
    line = next(x for x in output.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def print_warm_costs(cold: dict, warm: dict, n: int) -> None:
    """Split both runs into prompts (fixed) and images (per image): the ratio depends on n."""
    cold_image = (cold["seconds"] - cold["text_seconds"]) / n
    warm_image = (warm["seconds"] - warm["text_seconds"]) / n
    print(
        f"\ncold: {cold['text_seconds']:.2f} s of prompts, then {cold['steady_ips']:.1f} "
        f"images/s steady ({1000 * cold_image:.1f} ms per image); warm: {warm['seconds']:.2f} s, "
        f"{warm['text_seconds']:.2f} s of it new prompts, {1000 * warm_image:.3f} ms per image"
    )
    if cold_image > 50 * warm_image:
        crossing = (50 * warm["text_seconds"] - cold["text_seconds"]) / (
            cold_image - 50 * warm_image
        )
        print(f"at these costs a warm re-run is 50x faster than cold from {crossing:,.0f} images")


def cli_wall(images: Path, model_dir: Path, cache: Path, labels: list[str]) -> float:
    """Wall time of a whole `clipcls predict` process."""
    command = [
        sys.executable,
        "-m",
        "clipcls",
        "predict",
        str(images),
        "-q",
        "-f",
        "jsonl",
        "--labels",
        ",".join(labels),
        "--model",
        f"local-dir:{model_dir}",
        "--cache-dir",
        str(cache),
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def print_cached_checks(images: list[Path]) -> None:
    """What a cached image still costs: its cache key (one stat: size, mtime, inode, ctime)
    and the header check that applies --max-megapixels and the file-type rules, next to the
    draft decode that a cache hit saves."""
    from clipcls.filekey import FileKey
    from clipcls.images import check_image, load_image

    def per_image(work) -> float:  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        for path in images:
            work(path)
        return (time.perf_counter() - started) / len(images) * 1e3

    key, header, decode = (
        per_image(FileKey.of),
        per_image(check_image),
        per_image(lambda path: load_image(path, 224)),
    )
    print("\n| per cached image | ms | share of a draft decode |")
    print("| --- | ---: | ---: |")
    for name, value in (("cache key (stat)", key), ("header check", header)):
        print(f"| {name} | {value:.3f} | {value / decode:.1%} |")
    print(f"| draft decode (what a hit saves) | {decode:.3f} | 100% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1800)
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--child")
    parser.add_argument("--cache", default="")
    parser.add_argument(
        "--cached-checks", action="store_true", help="only measure what a cache hit still costs"
    )
    args = parser.parse_args()
    if args.child:
        child(args.child, args.images, args.cache)
        return
    images = make_images(args.images)
    if args.cached_checks:
        print_cached_checks(images)
        return
    model_dir = make_model()
    cache = DATA / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    n = len(images)
    print(f"# {n} JPEGs ({n // 3} each 12 MP, 2 MP, VGA), ViT-B-32 random weights, batch {BATCH}")
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    methods = ["openclip", *([] if args.skip_hf else ["hf"]), "cold", "warm", "ceiling"]
    results = {}
    for method in methods:
        results[method] = measure(method, args.images, cache)
        print(f"  measured {method}", file=sys.stderr, flush=True)
    cold, warm, ceiling = results["cold"], results["warm"], results["ceiling"]
    print(
        f"# clipcls: {cold['precision']}, {cold['torch_threads']} torch threads, "
        f"{cold['workers']} decode threads"
    )
    print("\n| method | seconds | images/s | peak RSS |")
    print("| --- | ---: | ---: | ---: |")
    for method in methods[:-1]:
        r = results[method]
        print(
            f"| {method} | {r['seconds']:.1f} | {n / r['seconds']:.1f} | "
            f"{r['peak_rss_mb']:.0f} MB |"
        )
    print(f"| ceiling (model only) | | {ceiling['ips']:.1f} | {ceiling['peak_rss_mb']:.0f} MB |")
    print(
        f"\nmodel only: {ceiling['one_thread_ips']:.1f} images/s on 1 torch thread, "
        f"{ceiling['ips']:.1f} on {ceiling['threads']}"
    )
    steady = cold["steady_ips"] / ceiling["ips"]
    print("\n| ratio | measured | target |")
    print("| --- | ---: | ---: |")
    openclip = results["openclip"]["seconds"] / cold["seconds"]
    print(f"| clipcls cold vs open_clip loop | {openclip:.1f}x faster | >= 4x |")
    if "hf" in results:
        hf = results["hf"]["seconds"] / cold["seconds"]
        print(f"| clipcls cold vs HF pipeline | {hf:.1f}x faster | >= 8x |")
    print(
        f"| warm re-run, new labels, vs cold | {cold['seconds'] / warm['seconds']:.0f}x faster "
        "| >= 50x |"
    )
    print(f"| cold steady state vs model-only ceiling | {steady:.0%} | >= 70% |")
    print("\n| cold steady state by size | images/s | of the ceiling |")
    print("| --- | ---: | ---: |")
    for size, ips in cold["by_size_ips"].items():
        print(f"| {size} | {ips:.1f} | {ips / ceiling['ips']:.0%} |")
    print_warm_costs(cold, warm, n)
    print_cached_checks(images)
    shutil.rmtree(cache, ignore_errors=True)
    folder = images[0].parent.parent
    cold_wall = cli_wall(folder, model_dir, cache, LABELS)
    warm_wall = cli_wall(folder, model_dir, cache, NEW_LABELS)
    print(
        f"end to end `clipcls predict` (process start and model load included): cold "
        f"{cold_wall:.1f} s, warm with new labels {warm_wall:.1f} s"
    )
    agreement = measure("agreement", args.images, cache)
    print("\n| agreement (cosine) | min | mean |")
    print("| --- | ---: | ---: |")
    for name, values in agreement.items():
        if isinstance(values, dict):
            print(f"| {name} | {values['min']:.5f} | {values['mean']:.5f} |")


if __name__ == "__main__":
    main()
