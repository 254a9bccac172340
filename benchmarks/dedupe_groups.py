"""Recall and precision of dedupe's groups on planted near duplicates: the old single-linkage
chains, complete linkage (where scipy is installed) and the stars clipcls makes, side by side.

The embeddings are synthetic and CLIP-like (unit rows sharing one direction, mean cosine about
0.5): distinct photos, bursts of near-shots (each shot at cosine 0.95-0.99 to the one before:
distinct photos, not duplicates), and planted copies of some photos at the cosine each kind of
copy is given here (re-encoded 0.99-1.0, resized 0.985-0.998, lightly cropped 0.95-0.985).
Those ranges are this script's assumptions, stated so that the comparison can be read: what it
measures is how each grouping treats the same pairs, not where trained CLIP puts a copy.

Recall: the planted (photo, copy) pairs whose two images end in one group. Precision: of the
images a grouping does not keep, the share that are copies of the image it keeps for them (the
files `dedupe --sort-into` would take out for that reason; near-shots count as wrong, though at
0.95 they are what was asked for). Left: the planted pairs at or above the threshold whose two
images both stay (a duplicate the run did not take out). Far: the images not kept that are
below the threshold to the image kept for them. The kept image is the one the rule
prefers: `original` prefers the photo to its copies (as `--keep largest` does where copies are
smaller), `walk` keeps the first in a shuffled walk order (a copy may be kept).

With `--model M` (any `--model` clipcls takes, e.g. `ViT-B-32` where its weights are cached)
the rows are instead real embeddings of the sample photos, each with three planted copies
(JPEG quality 60, half size, the middle 95%) and two near-shots (85% crops at opposite corners:
other photos, not copies), written under benchmarks/data/dedupe_photos/.

    python benchmarks/dedupe_groups.py [--photos 10000] [--copies 2000] [--seed 0]
    python benchmarks/dedupe_groups.py --model ViT-B-32 [--thresholds 0.95,0.985]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from clipcls.search.pairs import near_components, unit_rows
from clipcls.search.stars import star_groups

KINDS = {"re-encoded": (0.99, 1.0), "resized": (0.985, 0.998), "cropped": (0.95, 0.985)}
Groups = list[tuple[int, np.ndarray]]  # (kept row, member rows)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def at_cosine(rng: np.random.Generator, rows: np.ndarray, cosine: np.ndarray) -> np.ndarray:
    """A unit row at the given cosine to each row, in a random direction."""
    away = rng.standard_normal(rows.shape)
    away = unit(away - (away * rows).sum(axis=1, keepdims=True) * rows)
    return cosine[:, None] * rows + np.sqrt(1.0 - cosine[:, None] ** 2) * away


def planted(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, family of each row, is each row a copy, kind index of each copy (-1: none))."""
    rng = np.random.default_rng(args.seed)
    dim, n = 512, args.photos
    shared = unit(rng.standard_normal(dim))
    photos = unit(np.sqrt(0.5) * shared + np.sqrt(0.5) * unit(rng.standard_normal((n, dim))))
    start = 0
    while start < args.burst_photos:  # bursts: each shot near the one before, drifting away
        length = int(rng.integers(3, 13))
        for i in range(start + 1, min(start + length, n)):
            cosine = rng.uniform(0.95, 0.99, 1)
            photos[i] = at_cosine(rng, photos[i - 1 : i], cosine)[0]
        start += length
    sources = rng.choice(n, args.copies)  # bursts included; a few photos get 2 or 3 copies
    kinds = rng.integers(0, len(KINDS), args.copies)
    ranges = np.array(list(KINDS.values()))
    cosines = rng.uniform(ranges[kinds, 0], ranges[kinds, 1])
    copies = at_cosine(rng, photos[sources], cosines)
    rows = np.vstack([photos, copies]).astype(np.float16)
    family = np.r_[np.arange(n), sources]
    is_copy = np.r_[np.zeros(n, bool), np.ones(args.copies, bool)]
    kind = np.r_[np.full(n, -1), kinds]
    return rows, family, is_copy, kind


PHOTO_COPIES = {
    "re-encoded": lambda image: image,  # saved as JPEG quality 60
    "resized": lambda image: image.resize((image.width // 2, image.height // 2)),
    "cropped": lambda image: image.crop(_box(image, 0.95, 0.5)),
}


def _box(image: Image.Image, share: float, where: float) -> tuple[int, int, int, int]:
    """The box of a crop keeping share of each side, placed at where (0: top left, 1: corner)."""
    width, height = round(image.width * share), round(image.height * share)
    left, top = round((image.width - width) * where), round((image.height - height) * where)
    return left, top, left + width, top + height


def photo_rows(
    model: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The sample photos, their planted copies and near-shots, embedded by model: rows, family,
    is each a copy, kind of each copy, and a rank that prefers each original to its copies."""
    from clipcls.backends.base import BackendConfig, open_backend
    from clipcls.search.collect import collect
    from clipcls.settings import ModelSettings

    folder = Path(__file__).parent / "data" / "dedupe_photos"
    folder.mkdir(parents=True, exist_ok=True)
    samples = sorted(Path(__file__).parent.parent.joinpath("sample_images").glob("*.*"))
    samples = [path for path in samples if path.suffix.lower() in {".png", ".jpg"}]
    for number, path in enumerate(samples):
        image = Image.open(path).convert("RGB")
        image.save(folder / f"{number:02d}-photo.png")
        for kind, (name, make) in enumerate(PHOTO_COPIES.items()):
            make(image).save(folder / f"{number:02d}-copy{kind}-{name}.jpg", quality=60)
        for corner in (0, 1):
            shot = image.crop(_box(image, 0.85, corner))
            shot.save(folder / f"{number + len(samples) * (corner + 1):02d}-photo-shot.png")
    backend = open_backend("local", BackendConfig(settings=ModelSettings(model=model)))
    found = collect(backend, [str(folder)])
    names = [Path(path).name for path in found.paths]
    family = np.array([int(name[:2]) for name in names])
    is_copy = np.array(["-copy" in name for name in names])
    kind = np.array([int(name.split("-copy")[1][0]) if "-copy" in name else -1 for name in names])
    rank = np.argsort(np.argsort(is_copy, kind="stable"), kind="stable")
    return np.asarray(found.matrix, dtype=np.float16), family, is_copy, kind, rank


def components(matrix: np.ndarray, threshold: float) -> list[np.ndarray]:
    roots = near_components(matrix, threshold)
    order = np.argsort(roots, kind="stable")
    cuts = np.flatnonzero(np.diff(roots[order])) + 1
    return [rows for rows in np.split(order, cuts) if len(rows) >= 2]


def chains(matrix: np.ndarray, threshold: float, rank: np.ndarray) -> Groups:
    """The old grouping: each component of near pairs one group, its preferred row kept."""
    groups = []
    for rows in components(matrix, threshold):
        kept = rows[np.argmin(rank[rows])]
        groups.append((int(kept), rows[rows != kept]))
    return groups


def stars(matrix: np.ndarray, threshold: float, rank: np.ndarray) -> Groups:
    """clipcls's grouping (clipcls.search.dedupe.duplicate_groups without file names)."""
    groups: Groups = []
    for rows in components(matrix, threshold):
        ranked = rows[np.argsort(rank[rows], kind="stable")]
        groups += [(kept, members) for kept, members, _ in star_groups(matrix, ranked, threshold)]
    return groups


def complete(matrix: np.ndarray, threshold: float, rank: np.ndarray) -> Groups:
    """Complete linkage within each component, cut at the threshold (every pair within it)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    groups = []
    for rows in components(matrix, threshold):
        vectors = unit_rows(matrix[rows]).astype(np.float64)
        tree = linkage(vectors, method="complete", metric="cosine")
        labels = fcluster(tree, t=1.0 - threshold + 1e-9, criterion="distance")
        for label in np.unique(labels):
            members = rows[labels == label]
            if len(members) >= 2:
                kept = members[np.argmin(rank[members])]
                groups.append((int(kept), members[members != kept]))
    return groups


def scores(
    groups: Groups,
    matrix: np.ndarray,
    threshold: float,
    planted: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> dict[str, float]:
    family, is_copy, kind = planted
    n = len(family)
    group_of = np.full(n, -1)
    kept_of = np.full(n, -1)
    for number, (kept, members) in enumerate(groups):
        group_of[kept] = group_of[members] = number
        kept_of[members] = kept
    copies = np.flatnonzero(is_copy)
    row_of = {int(family[row]): row for row in np.flatnonzero(~is_copy)}  # each photo's row
    originals = np.array([row_of[int(f)] for f in family[copies]], dtype=np.int64)
    found = (group_of[copies] >= 0) & (group_of[copies] == group_of[originals])
    taken = np.flatnonzero(kept_of >= 0)
    right = family[taken] == family[kept_of[taken]]
    rows = unit_rows(matrix)
    lowest = min(
        (float((rows[members] @ rows[kept]).min()) for kept, members in groups), default=1.0
    )
    result = {"recall": float(found.mean()), "precision": float(right.mean()) if len(taken) else 1}
    for index, name in enumerate(KINDS):
        result[name] = float(found[kind[copies] == index].mean())
    near = np.einsum("ij,ij->i", rows[copies], rows[originals]) >= threshold - 1e-6
    stays = kept_of < 0
    result["left"] = float((near & stays[copies] & stays[originals]).sum() / max(near.sum(), 1))
    cosine = np.einsum("ij,ij->i", rows[taken], rows[kept_of[taken]])
    result["far"] = float((cosine < threshold - 1e-6).mean()) if len(taken) else 0.0
    result |= {
        "groups": len(groups),
        "largest": max((len(m) + 1 for _, m in groups), default=0),
        "lowest": lowest,
        "not kept": len(taken),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--burst-photos", type=int, default=3_000, help="photos in bursts")
    parser.add_argument("--copies", type=int, default=2_000)
    parser.add_argument("--thresholds", default="0.95,0.985")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="embed planted copies of the sample photos with it")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed + 1)
    if args.model:
        matrix, family, is_copy, kind, original = photo_rows(args.model)
        print(f"{len(matrix)} sample photos, near-shots and copies, embedded by {args.model}")
    else:
        matrix, family, is_copy, kind = planted(args)
        original = np.argsort(np.argsort(is_copy, kind="stable"), kind="stable")
        print(f"{args.photos} photos ({args.burst_photos} in bursts), {args.copies} copies")
    preferences = {"original": original, "walk": rng.permutation(len(family))}
    methods: dict[str, Callable[[np.ndarray, float, np.ndarray], Groups]] = {
        "chains (old)": chains,
        "stars (new)": stars,
    }
    try:
        import scipy  # noqa: F401

        methods["complete linkage"] = complete
    except ImportError:
        print("complete linkage: not available (pip install scipy)")
    header = ["threshold", "kept", "grouping", "recall", *KINDS, "precision", "left", "far"]
    header += ["groups", "largest", "lowest", "not kept", "s"]
    print(" | ".join(header))
    for threshold in (float(t) for t in args.thresholds.split(",")):
        for preference, rank in preferences.items():
            for name, method in methods.items():
                began = time.perf_counter()
                groups = method(matrix, threshold, rank)
                took = time.perf_counter() - began
                found = scores(groups, matrix, threshold, (family, is_copy, kind))
                cells = [f"{threshold:g}", preference, name]
                keys = ("recall", *KINDS, "precision", "left", "far")
                cells += [f"{found[key]:.3f}" for key in keys]
                cells += [str(found["groups"]), str(found["largest"]), f"{found['lowest']:.3f}"]
                cells += [str(found["not kept"]), f"{took:.2f}"]
                print(" | ".join(cells))


if __name__ == "__main__":
    main()
