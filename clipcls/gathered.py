"""Image embeddings gathered into one matrix in input order, whatever order a backend answers
in: what an evaluation, a search, a support set and a served search each need of one."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipcls.prediction import Prediction


def _no_advance(done: int) -> None:
    return None


@dataclass(frozen=True)
class Embedded:
    """Some paths' image embeddings in input order: row i of matrix is readable[i], the
    input at index rows[i]; the unreadable ones (path, error) in input order too."""

    readable: tuple[str, ...]
    rows: tuple[int, ...]
    matrix: np.ndarray  # (n_readable, dim), as the backend gave them
    failures: tuple[tuple[str, str], ...]


def gather(
    found: Iterable[Prediction],
    paths: Sequence[Path | str],
    advance: Callable[[int], None] = _no_advance,
    dtype: type[np.floating[Any]] = np.float32,
) -> Embedded:
    """The embeddings found for paths (a backend's embed_images over them, in any order),
    in input order in one matrix of dtype (a search keeps float16: half the memory of a
    million images); a path never answered is 'not embedded'. advance hears of each one."""
    position = {str(path): index for index, path in enumerate(paths)}
    rows: np.ndarray | None = None
    errors = {index: "not embedded" for index in range(len(paths))}
    for prediction in found:
        index = position[str(prediction.path)]
        if prediction.error is None and prediction.embedding is not None:
            if rows is None:  # (n, dim), the width known from the first embedding
                rows = np.zeros((len(paths), len(prediction.embedding)), dtype=dtype)
            rows[index] = prediction.embedding
            errors.pop(index, None)
        else:
            errors[index] = prediction.error or "not embedded"
        advance(1)
    keep = tuple(index for index in range(len(paths)) if index not in errors)
    matrix = rows[list(keep)] if rows is not None else np.zeros((0, 0), dtype=dtype)
    failures = tuple((str(paths[i]), errors[i]) for i in sorted(errors))
    return Embedded(tuple(str(paths[i]) for i in keep), keep, matrix, failures)
