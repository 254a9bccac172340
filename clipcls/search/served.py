"""A search's answer (Hit, Ranking) and a server's own answer read into one: standard library
alone, so that `clipcls search --server` can print a warm server's hits without numpy."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipcls.errors import ClipclsError

DEFAULT_K = 20  # images a search shows
HIT_COLUMNS = ("rank", "path", "score")  # a search's rows, in every format

# The server's search of folders (absolute) for a text, k hits: its JSON answer, or None
# where it cannot answer (another machine, a folder outside its roots).
AskServer = Callable[[list[str], str, int], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Hit:
    """One image found: its place (1 is best), path, and cosine to the query."""

    rank: int
    path: str
    score: float


@dataclass(frozen=True)
class Ranking:
    """A search's answer: the hits, best first, and the files that could not be read."""

    hits: tuple[Hit, ...]
    failures: tuple[tuple[str, str], ...]  # path, error
    model: str  # the model id the embeddings are of


def served_ranking(
    ask: AskServer, inputs: Sequence[str], text: str, k: int, model: str
) -> Ranking | None:
    """The server's own search (from its cache and a matrix it keeps warm) where every input
    is a folder, paths spelled under the inputs as given; None where it cannot answer."""
    if not inputs or not all(os.path.isdir(path) for path in inputs):
        return None
    given = {os.path.abspath(path): path for path in inputs}
    answer = ask(list(given), text, k)
    if answer is None:
        return None
    try:
        hits = tuple(_hit(place, item, given) for place, item in enumerate(answer["search"], 1))
        failed = tuple(_failure(str(p), str(e), given) for p, e in answer.get("failures", []))
        if len(hits) > k:
            raise ValueError(f"{len(hits)} hits, {k} asked for")
    except (KeyError, TypeError, ValueError, OverflowError):
        raise ClipclsError("the server sent a search answer clipcls cannot read") from None
    return Ranking(hits, failed, model)


def _failure(path: str, error: str, given: dict[str, str]) -> tuple[str, str]:
    """A file the server could not read, its path and the error's spelled as the local walk
    spells them (the server's errors name the absolute path it opened)."""
    shown = _as_given(path, given)
    return shown, error.replace(path, shown)


def _hit(place: int, item: dict[str, Any], given: dict[str, str]) -> Hit:
    """One served hit, if it is what the search asked for: its place in the ranking, a path
    under a folder searched, a finite score; else ValueError (a server of another kind, or
    one that lies, never puts a path from elsewhere or a NaN into the results)."""
    rank, path, score = item["rank"], item["path"], item["score"]
    if rank != place or not isinstance(rank, int) or isinstance(rank, bool):
        raise ValueError(f"rank {rank!r} at place {place}")
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ValueError(f"path {path!r}")
    if not isinstance(score, int | float) or isinstance(score, bool) or not math.isfinite(score):
        raise ValueError(f"score {score!r}")  # math.isfinite(10**400): OverflowError
    if not any(_inside(path, folder) for folder in given):
        raise ValueError(f"{path!r} is outside the folders searched")
    return Hit(rank, _as_given(path, given), float(score))


def _as_given(path: str, given: dict[str, str]) -> str:
    """path as the local walk would spell it: under the input as the user wrote it, through
    Path as the walk does (`./photos` and `photos//` give `photos/x.jpg`, `.` gives `x.jpg`)."""
    for absolute, written in given.items():
        if _inside(path, absolute):
            return str(Path(written) / os.path.relpath(path, absolute))
    return path


def _inside(path: str, folder: str) -> bool:
    inside = os.path.relpath(path, folder)
    return inside != os.pardir and not inside.startswith(os.pardir + os.sep)
