"""Near pairs of a float16 unit matrix (cosine >= threshold) joined into connected components:
exactly, block by block, for small sets; by random-hyperplane LSH with every candidate verified
exactly for large ones.

LSH recall: each band is a 16-bit sign signature of the centred rows (centring removes the
direction all CLIP embeddings share, which would otherwise put most rows in a few buckets). A
pair at the threshold agrees on one bit with probability p = 1 - angle/pi (its angle between the
centred rows), collides in one band with p**16, and is missed by every one of L bands with
(1 - p**16)**L; L is chosen so that this is at most MISS (0.5%) for the pair at the threshold
whose centred rows are among the shortest (the 1st percentile), and pairs above the threshold,
or joined through a third image, are missed less often. Candidates whose signatures disagree in
far more of their first 256 bits than such a pair would (a 5-sigma cut) are dropped before the
exact check, which keeps the rows read to the few pairs worth it. Measured on 100,000 CLIP-like
rows (mean cosine 0.5): 99.9% of 19,921 pairs planted at cosine 0.950-0.952 found, all of 5,000
planted at 0.95-1.0 (tests/test_dedupe.py checks >= 99% on 30,000). Unrelated rows share a band
with chance 2**-16, so the candidates grow as n**2: beyond a few hundred thousand rows the
bucket pairs, not the projection, dominate.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

EXACT_UP_TO = 20_000  # rows: below this the exact blockwise search is fast enough (seconds)
BITS = 16  # per band: one uint16 bucket key
MISS = 0.005  # at most this chance to miss a pair at the threshold (see the module docstring)
# LSH projects each row on BITS * bands planes, the exact search on n / 2 rows on average:
# with more than n / (BITS * COST_RATIO) bands (a low threshold) the exact search is cheaper.
COST_RATIO = 4
BLOCK = 4096  # rows per float32 block
SIGMAS = 5.0  # the bit-agreement cut below a pair at the threshold's expected agreement
SEED = 27  # the projection is seeded: the same matrix gives the same groups every run
BIG_RUN = 64  # a bucket this full is checked as one dense block, not pair by pair
SAMPLE = 20_000  # rows the mean and the short centred length are estimated from
CHECKED_BANDS = 16  # bands (256 bits) whose agreement a candidate pair must show
# Cosines are of rows scaled back to length 1 (float16 leaves them 1 +- 5e-4 long, and an image
# with its own copy would read 0.9997: below --threshold 1); float32 sums then read 1 +- 1e-7.
ROUNDING = 1e-6


class Components:
    """Union-find over row numbers, unions applied to whole arrays of edges at once; a
    component's root is its smallest row."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    def roots(self, rows: np.ndarray) -> np.ndarray:
        """The root of each row."""
        found: np.ndarray = self.parent[rows]
        while True:
            up = self.parent[found]
            if np.array_equal(up, found):
                return found
            found = up

    def union(self, left: np.ndarray, right: np.ndarray) -> None:
        """Join the components of each pair left[i], right[i]."""
        while len(left):
            a, b = self.roots(left), self.roots(right)
            apart = a != b
            if not apart.any():
                break
            a, b = a[apart], b[apart]
            # Hook the larger root under the smaller; clashing hooks settle on the next pass.
            np.minimum.at(self.parent, np.maximum(a, b), np.minimum(a, b))
            left, right = left[apart], right[apart]
        while True:  # flatten, so that later roots() calls take one or two steps
            flat = self.parent[self.parent]
            if np.array_equal(flat, self.parent):
                return
            self.parent = flat

    def labels(self) -> np.ndarray:
        """Every row's root."""
        return self.roots(np.arange(len(self.parent)))


def near_components(matrix: np.ndarray, threshold: float, exact: bool | None = None) -> np.ndarray:
    """Each row's component root (its smallest row) in the graph of pairs at cosine >=
    threshold. exact: None chooses (exact below EXACT_UP_TO rows, or where LSH would need so
    many bands that it costs more), True or False forces the search (False: LSH wherever it is
    the cheaper)."""
    n = len(matrix)
    components = Components(n)
    if n < 2:
        return components.labels()
    if exact is None:
        exact = n < EXACT_UP_TO
    cut = threshold - ROUNDING
    plan = None if exact else _plan(matrix, cut)
    if plan is None:
        for left, right in exact_pairs(matrix, cut):
            components.union(left, right)
    else:
        _lsh(matrix, cut, plan, components)
    return components.labels()


def _float32(matrix: np.ndarray, start: int, stop: int) -> np.ndarray:
    return np.asarray(matrix[start:stop], dtype=np.float32)


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """The rows as float32 of length 1 (see ROUNDING)."""
    found = np.asarray(rows, dtype=np.float32)
    lengths = np.linalg.norm(found, axis=1, keepdims=True)
    return np.asarray(found / np.maximum(lengths, 1e-12), dtype=np.float32)


def exact_pairs(matrix: np.ndarray, threshold: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every pair i < j at cosine >= threshold, a block of rows at a time."""
    n = len(matrix)
    for start in range(0, n, BLOCK):
        rows = unit_rows(matrix[start : min(start + BLOCK, n)])
        for other in range(start, n, BLOCK):
            columns = unit_rows(matrix[other : min(other + BLOCK, n)])
            # (block, dim) @ (dim, block) -> (block, block) cosines
            i, j = np.nonzero(rows @ columns.T >= threshold)
            i, j = i + start, j + other
            keep = i < j
            yield i[keep], j[keep]


class _Plan:
    """The projection: BITS * bands Gaussian hyperplanes through the rows' mean."""

    def __init__(self, mean: np.ndarray, bands: int) -> None:
        self.mean, self.bands = mean, bands
        rng = np.random.default_rng(SEED)
        self.planes = rng.standard_normal((len(mean), BITS * bands), dtype=np.float32)


def _plan(matrix: np.ndarray, threshold: float) -> _Plan | None:
    """The bands that find a pair at the threshold with chance 1 - MISS; None where the exact
    search would cost less (see COST_RATIO). The mean and the short centred length come
    from a sample of rows: centring need not be exact, and the percentile barely moves."""
    n = len(matrix)
    picked = np.random.default_rng(SEED).choice(n, min(n, SAMPLE), replace=False)
    sample = np.asarray(matrix[np.sort(picked)], dtype=np.float32)
    mean = sample.mean(axis=0)
    short = float(np.percentile(np.linalg.norm(sample - mean, axis=1), 1.0))
    hit = _agreement(centred_cosine(threshold, short, short)) ** BITS
    if hit <= 0.0:
        return None
    bands = 1 if hit >= 1.0 else math.ceil(math.log(MISS) / math.log1p(-hit))
    if bands * BITS * COST_RATIO > n:
        return None
    bands += -bands % 4  # whole uint64 words of signature
    return _Plan(mean, bands)


def centred_cosine(threshold: float, left: np.ndarray | float, right: np.ndarray | float) -> Any:
    """The cosine of two centred rows of these lengths whose unit rows are at the threshold:
    |a - b|^2 = 2 - 2t, and a'.b' = (|a'|^2 + |b'|^2 - |a - b|^2) / 2."""
    dot = (np.square(left) + np.square(right) - (2.0 - 2.0 * threshold)) / 2.0
    return np.clip(dot / np.maximum(np.multiply(left, right), 1e-12), -1.0, 1.0)


def _agreement(cosine: Any) -> Any:
    """The chance that a random hyperplane puts two rows at this cosine on the same side."""
    return 1.0 - np.arccos(cosine) / np.pi


def _signatures(matrix: np.ndarray, plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
    """(n, bands) uint16: each row's sign bits against the planes, 16 to a band; and (n,) the
    length of each centred row (|x - m|^2 = |x|^2 - 2 x.m + |m|^2, x.m from the same product)."""
    n = len(matrix)
    planes = np.column_stack([plan.planes, plan.mean])  # the last column gives x.m
    offset = plan.mean @ plan.planes  # centring, once for all rows
    packed = np.empty((n, plan.bands * 2), dtype=np.uint8)
    norms = np.empty(n, dtype=np.float32)
    for start in range(0, n, BLOCK):
        rows = _float32(matrix, start, start + BLOCK)
        # (block, dim) @ (dim, bits + 1) -> (block, bits + 1) projections
        projected = rows @ planes
        packed[start : start + BLOCK] = np.packbits(projected[:, :-1] > offset, axis=1)
        squared = np.einsum("ij,ij->i", rows, rows) - 2 * projected[:, -1] + plan.mean @ plan.mean
        norms[start : start + BLOCK] = np.sqrt(np.maximum(squared, 0.0))
    return packed.view(np.uint16), norms


def _lsh(matrix: np.ndarray, threshold: float, plan: _Plan, components: Components) -> None:
    """Union every verified pair that shares a band with another row."""
    signatures, norms = _signatures(matrix, plan)
    # The bit-agreement check reads the first few words only: 256 bits tell a pair at the
    # threshold from an unrelated one by many sigmas, at a fraction of the gathering.
    words = np.ascontiguousarray(signatures[:, :CHECKED_BANDS]).view(np.uint64)
    for band in range(plan.bands):
        left, right, big_runs = _bucket_pairs(signatures[:, band])
        for members in big_runs:
            _dense(matrix, threshold, members, components)
        apart = components.roots(left) != components.roots(right)
        left, right = left[apart], right[apart]
        keep = _plausible(words, norms, left, right, threshold)
        left, right = left[keep], right[keep]
        near = _cosines(matrix, left, right) >= threshold
        components.union(left[near], right[near])


def _bucket_pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The pairs of rows that share a key (rows of keys held by BIG_RUN or more rows come
    apart, one array per key)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, len(keys)])
    big_runs = [order[starts[i] : starts[i] + sizes[i]] for i in np.flatnonzero(sizes >= BIG_RUN)]
    shared = np.repeat((sizes >= 2) & (sizes < BIG_RUN), sizes)
    rows, ordered = order[shared], ordered[shared]  # only rows of small shared buckets
    left, right = [], []
    for gap in range(1, BIG_RUN):
        same = ordered[gap:] == ordered[:-gap]
        if not same.any():
            break
        left.append(rows[:-gap][same])
        right.append(rows[gap:][same])
    if not left:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, big_runs
    return np.concatenate(left), np.concatenate(right), big_runs


def _dense(matrix: np.ndarray, threshold: float, members: np.ndarray, comps: Components) -> None:
    """Check a full bucket, unless its rows are one component already: each row against the
    first (enough where the bucket holds copies of one image), then every row not joined so
    joined against all of them (pairs of two joined rows need no check)."""
    if _one_component(comps, members):
        return
    members = np.sort(members)
    rows = unit_rows(matrix[members])
    # (members, dim) @ (dim,) -> (members,) cosines to the first
    joined = rows @ rows[0] >= threshold
    comps.union(members[joined], np.full(int(joined.sum()), members[0]))
    strays = np.flatnonzero(~joined)
    for start in range(0, len(strays), BLOCK):
        block = strays[start : start + BLOCK]
        # (strays, dim) @ (dim, members) -> (strays, members) cosines
        i, j = np.nonzero(rows[block] @ rows.T >= threshold)
        comps.union(members[block[i]], members[j])


def _one_component(comps: Components, members: np.ndarray) -> bool:
    roots = comps.roots(members)
    return bool((roots == roots[0]).all())


def _plausible(
    words: np.ndarray, norms: np.ndarray, left: np.ndarray, right: np.ndarray, threshold: float
) -> np.ndarray:
    """Whether each pair's signature words agree in enough bits for a pair at the threshold
    or above (norms: the centred rows' lengths): a pair exactly there agrees in
    Binomial(bits, p) of them; keep all down to SIGMAS below the mean."""
    bits = 64 * words.shape[1]
    p = _agreement(centred_cosine(threshold, norms[left], norms[right]))
    cut = bits * p - SIGMAS * np.sqrt(bits * p * (1.0 - p))
    differ = np.zeros(len(left), dtype=np.int64)
    for column in range(words.shape[1]):
        differ += _popcount(words[left, column] ^ words[right, column])
    plausible: np.ndarray = bits - differ >= cut
    return plausible


def _popcount(values: np.ndarray) -> np.ndarray:
    """The set bits of each uint64."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.asarray(np.bitwise_count(values), dtype=np.int64)
    as_bytes = values.view(np.uint8).reshape(len(values), -1)
    return np.asarray(_BYTE_BITS[as_bytes].sum(axis=1), dtype=np.int64)


_BYTE_BITS = np.array([bin(value).count("1") for value in range(256)], dtype=np.int64)


def _cosines(matrix: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The exact cosine of each pair, in float32 chunks."""
    found = np.empty(len(left), dtype=np.float32)
    for start in range(0, len(left), 65536):
        a = unit_rows(matrix[left[start : start + 65536]])
        b = unit_rows(matrix[right[start : start + 65536]])
        found[start : start + 65536] = np.einsum("ij,ij->i", a, b)
    return found
