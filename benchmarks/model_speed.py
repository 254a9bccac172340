"""Image-tower throughput per architecture, random weights (same cost as trained ones).

Run: python benchmarks/model_speed.py [--precision fp32|bf16] [--threads N] [--batch B] [MODEL]
Prints images/s of encode_image on ready 224x224 tensors (fp32 or bf16) for the README's model
table.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time

import open_clip
import torch

DEFAULT_MODELS = ["ViT-B-32", "ViT-B-16", "ViT-L-14"]


def images_per_second(name: str, batch: int, seconds: float, precision: str) -> float:
    model = open_clip.create_model(name, pretrained=None, precision=precision).eval()
    size = model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    images = torch.randn(batch, 3, size, size, dtype=dtype)
    with torch.inference_mode():
        model.encode_image(images)  # warm-up: allocator and kernel selection
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model.encode_image(images)
            done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=DEFAULT_MODELS)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # "initialized randomly" is the point here
    torch.set_num_threads(args.threads)
    print(
        f"# {platform.processor() or platform.machine()}, {args.threads} threads, "
        f"torch {torch.__version__}, batch {args.batch}, {args.precision}"
    )
    print("| model | images/s (image tower only) |")
    print("| --- | ---: |")
    for name in args.models:
        rate = images_per_second(name, args.batch, args.seconds, args.precision)
        print(f"| {name} | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
