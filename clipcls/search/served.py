"""A search's answer (Hit, Ranking) and a server's own answer read into one: standard library
alone, so that `clipcls search --server` can print a warm server's hits without numpy."""

from __future__ import annotations

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
        hits = tuple(
            Hit(int(hit["rank"]), _as_given(str(hit["path"]), given), float(hit["score"]))
            for hit in answer["search"]
        )
        failed = tuple((_as_given(str(p), given), str(e)) for p, e in answer.get("failures", []))
    except (KeyError, TypeError, ValueError):
        raise ClipclsError("the server sent a search answer clipcls cannot read") from None
    return Ranking(hits, failed, model)


def _as_given(path: str, given: dict[str, str]) -> str:
    """path as the local walk would spell it: under the input as the user wrote it, through
    Path as the walk does (`./photos` and `photos//` give `photos/x.jpg`, `.` gives `x.jpg`)."""
    for absolute, written in given.items():
        inside = os.path.relpath(path, absolute)
        if inside != os.pardir and not inside.startswith(os.pardir + os.sep):
            return str(Path(written) / inside)
    return path
