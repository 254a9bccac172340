"""The arithmetic of a search: a query's signed terms (terms.py) combined into one unit
vector, and exact top-k by cosine over a float16 matrix in blocks (a million rows never need
more than one block's float32 scores)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clipcls.errors import UsageError

BLOCK = 65_536  # rows scored at once: bounds the float32 scores to 256 KiB per query
ZERO = 1e-6  # a combination shorter than this has no direction


def unit(vector: np.ndarray, what: str) -> np.ndarray:
    """vector scaled to length 1 (float32); UsageError naming what if it has no direction."""
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm < ZERO:
        raise UsageError(f"{what} has no direction: its parts cancel out")
    return (np.asarray(vector, dtype=np.float64) / norm).astype(np.float32)


def combine(vectors: np.ndarray, signs: Sequence[int]) -> np.ndarray:
    """The signed sum of unit term vectors, (n_terms, dim) -> (dim,), normalized (rclip's
    combination: + terms added, - terms subtracted)."""
    weights = np.asarray(signs, dtype=np.float64)
    return unit(weights @ vectors.astype(np.float64), "the query")


def average(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Several unit queries (a text's and images') as one: their mean, normalized."""
    return unit(np.mean(np.stack(vectors).astype(np.float64), axis=0), "the query")


def top_k(
    matrix: np.ndarray, query: np.ndarray, k: int, skip: frozenset[int] = frozenset()
) -> list[tuple[int, float]]:
    """The k rows most similar to query by cosine, best first (ties by row), leaving out the
    rows in skip: (row, score). Exact: every row is scored, a block at a time."""
    want = k + len(skip)
    best_rows = np.empty(0, dtype=np.int64)
    best_scores = np.empty(0, dtype=np.float32)
    q = query.astype(np.float32)
    for start in range(0, matrix.shape[0], BLOCK):
        block = np.asarray(matrix[start : start + BLOCK], dtype=np.float32)
        scores = block @ q  # (rows, dim) @ (dim,) -> (rows,)
        rows = np.arange(start, start + len(block))
        if len(scores) > want:
            keep = np.argpartition(-scores, want - 1)[:want]
            rows, scores = rows[keep], scores[keep]
        best_rows = np.concatenate([best_rows, rows])
        best_scores = np.concatenate([best_scores, scores])
        if len(best_scores) > want:
            keep = np.argpartition(-best_scores, want - 1)[:want]
            best_rows, best_scores = best_rows[keep], best_scores[keep]
    order = np.lexsort((best_rows, -best_scores))
    # A cosine is at most 1, though a float16 row is 1 +- 5e-4 long (an image's copy: 1.0002)
    ranked = [(int(best_rows[i]), min(float(best_scores[i]), 1.0)) for i in order]
    return [(row, score) for row, score in ranked if row not in skip][:k]
