"""The one check of an image embedding that comes from outside this run's model (a saved file's
row, a server's answer, a cache row): clipcls's embeddings are flat float32 unit vectors of
finite numbers, all as wide as their model's."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# On |v|^2: the engine normalizes in float32, so its own vectors are within ~1e-6 of 1; a
# vector 1000 times too long (which scored 1.000000 for whatever it matched) is far outside.
UNIT_TOLERANCE = 1e-3
NUMBER_TYPES = {float, int}  # a JSON list's numbers (by exact type: a bool is an int, too)


class NotAnEmbedding(ValueError):
    """Why a value is no embedding, worded to follow "the embedding"."""


def check_embedding(value: Any, width: int | None = None) -> np.ndarray:
    """value (a list of numbers, or an array) as a float32 embedding, (dim,); NotAnEmbedding
    saying why it is none: not a flat list of numbers, another width than width (where one is
    known), NaN or infinite, all zeros, or not of unit length."""
    vector = _as_vector(value)
    if width is not None and len(vector) != width:
        raise NotAnEmbedding(f"has {len(vector)} numbers, not {width} like the others")
    # One float64 dot per vector (a cache lookup checks thousands), where no finite float32
    # overflows: NaN or infinity anywhere makes it NaN or infinite.
    wide = vector.astype(np.float64)
    squared = float(wide @ wide)
    if math.isfinite(squared) and abs(squared - 1.0) <= UNIT_TOLERANCE:
        return vector
    if not math.isfinite(squared):
        raise NotAnEmbedding("holds NaN, an infinity or a number beyond float32")
    if not squared:
        raise NotAnEmbedding("is all zeros")
    length = math.sqrt(squared)
    raise NotAnEmbedding(f"has length {length:.6g}, not 1 (embeddings are unit vectors)")


def _as_vector(value: Any) -> np.ndarray:
    """value as a non-empty float32 vector; NotAnEmbedding for strings, booleans, nested or
    ragged lists, and anything else that is no flat list of numbers."""
    vector = np.zeros((0, 0), np.float32)
    if isinstance(value, np.ndarray) and value.dtype == np.float32:
        vector = value  # the cache's and a server's (as the wire record reads them)
    elif isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        with np.errstate(over="ignore"):  # a number beyond float32 becomes an infinity
            vector = value.astype(np.float32)
    elif isinstance(value, list | tuple) and set(map(type, value)) <= NUMBER_TYPES:
        try:  # one beyond float64 (a JSON integer) cannot
            with np.errstate(over="ignore"):
                vector = np.asarray(value, dtype=np.float32)
        except OverflowError:
            raise NotAnEmbedding("holds NaN, an infinity or a number beyond float32") from None
    if vector.ndim != 1 or not len(vector):
        raise NotAnEmbedding("is not a list of numbers")
    return vector
