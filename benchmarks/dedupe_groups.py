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

    python benchmarks/dedupe_groups.py [--photos 10000] [--copies 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

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
    originals = family[copies]
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
    args = parser.parse_args()
    matrix, family, is_copy, kind = planted(args)
    rng = np.random.default_rng(args.seed + 1)
    preferences = {
        "original": np.argsort(np.argsort(np.r_[np.zeros(args.photos), np.ones(args.copies)])),
        "walk": rng.permutation(len(family)),
    }
    methods: dict[str, Callable[[np.ndarray, float, np.ndarray], Groups]] = {
        "chains (old)": chains,
        "stars (new)": stars,
    }
    try:
        import scipy  # noqa: F401

        methods["complete linkage"] = complete
    except ImportError:
        print("complete linkage: not available (pip install scipy)")
    print(f"{args.photos} photos ({args.burst_photos} in bursts), {args.copies} planted copies")
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
