"""Star groups within one component of near pairs: rows taken in a stated order of preference,
each row not yet placed keeps every later row not yet placed at cosine >= the threshold to it.

Stars, not complete linkage: a group answers "is each of these a copy of what I keep?", which
needs every member near the kept image and nothing of the members among themselves; the kept
image is the one the keep rule prefers in its group (a member preferred over its kept image
would have been kept first); and taking members out (a dedupe that moved them) leaves every
other star as it was, so a rerun after a kill plans the same moves. Complete linkage promises
more (members near each other too) but splits a photo's copies that lie on either side of it,
and a new agglomeration after files move can change which image a group keeps.
"""

from __future__ import annotations

import numpy as np

from clipcls.search.pairs import ROUNDING, unit_rows

CELLS = 1 << 22  # cosines computed at once (16 MiB of float32): the block's rows * free rows


def star_groups(
    matrix: np.ndarray, ranked: np.ndarray, threshold: float
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """The stars among the rows ranked (row numbers of matrix, most preferred first): (kept row,
    member rows, their cosines to it) for each row that keeps one or more others.

    A block of candidates is compared with the rows still free after it at once; a component of
    copies of one image costs one block, a long chain of near-shots up to n**2 / 2 cosines.
    """
    cut = threshold - ROUNDING  # as pairs.near_components compares
    free = np.ones(len(ranked), dtype=bool)
    stars: list[tuple[int, np.ndarray, np.ndarray]] = []
    start = 0
    while start < len(ranked):
        later = start + np.flatnonzero(free[start:])  # positions in ranked, this block's first
        if not len(later):
            break  # the rest were kept by earlier rows
        block = max(1, min(len(later), CELLS // max(len(later), 1)))
        candidates = later[:block]
        columns = unit_rows(matrix[ranked[later]])
        # (block, dim) @ (dim, free) -> (block, free) cosines of each candidate to every free row
        cosines = columns[:block] @ columns.T
        for i, position in enumerate(candidates):
            if not free[position]:
                continue  # kept by a candidate earlier in this block
            free[position] = False
            near = (cosines[i] >= cut) & free[later]
            if near.any():
                free[later[near]] = False
                stars.append((int(ranked[position]), ranked[later[near]], cosines[i][near]))
        start = int(candidates[-1]) + 1
    return stars
