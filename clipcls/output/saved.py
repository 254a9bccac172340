"""Read back a label output written with --save-embeddings (JSONL or Parquet): each file's
image embedding or error, the model its rows record, and what its setup record says."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipcls.errors import UsageError
from clipcls.output.formats import Format, format_of
from clipcls.pathtext import clean_text, path_key, text_to_path
from clipcls.remote import is_url
from clipcls.vectors import NotAnEmbedding, check_embedding

SETUP_SUFFIX = ".clipcls.json"  # labeling.manifest's setup record, beside the output
MAX_SETUP_BYTES = 64 << 20


@dataclass(frozen=True)
class SavedImage:
    """One row of the file: its path (from here), and its embedding or why it has none."""

    path: str
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)  # (dim,)
    error: str | None = None


@dataclass(frozen=True)
class SavedEmbeddings:
    """What a --save-embeddings output holds, its rows in file order, each path once."""

    source: Path
    images: tuple[SavedImage, ...]
    model: str  # as the rows record it
    model_key: str | None  # the weights' identity from the setup record (None: not known)
    cwd: str | None = None  # the folder the saving run started in, where it is not this one

    @property
    def width(self) -> int | None:
        """How many numbers each embedding holds (None: no row has one)."""
        return next((len(i.embedding) for i in self.images if i.embedding is not None), None)

    def by_key(self) -> dict[str, SavedImage]:
        """The rows by the file each names (pathtext.path_key)."""
        return {path_key(image.path): image for image in self.images}


def no_embeddings(source: Path) -> UsageError:
    """The refusal of a file that holds no embeddings."""
    return UsageError(
        f"{clean_text(str(source))} holds no image embeddings: write them with "
        "`clipcls label ... --save-embeddings -o FILE.jsonl` (or FILE.parquet)"
    )


def _setup(source: Path) -> dict[str, Any]:
    """The setup record beside the file, {} if there is none or it cannot be read."""
    record = source.with_name(source.name + SETUP_SUFFIX)
    try:
        if not record.is_file() or record.stat().st_size > MAX_SETUP_BYTES:
            return {}
        data = json.loads(record.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _comparable(key: Any) -> str | None:
    """A weights identity to compare, None if absent or as older versions wrote file
    identities (size and a hash of both ends): not comparable with a digest."""
    if not isinstance(key, str) or not key:
        return None
    is_file = key.startswith("local-dir:") or "+file:" in key
    return None if is_file and "sha256:" not in key else key


def _rows(source: Path, kind: Format) -> Iterator[tuple[dict[str, Any], str]]:
    """The file's rows, each with its embedding and where it lies (`FILE:LINE`); UsageError
    for one without them, cut short (a run killed or still writing), or not clipcls's."""
    stored = kind.read(source, embeddings=True)
    if stored.header is not None and not {"embedding", "path"} <= set(stored.header):
        raise no_embeddings(source)
    for row in stored.rows:
        if "embedding" not in row:
            raise no_embeddings(source)
        yield row, stored.position.of(source)
    if stored.dropped_bytes:  # after the rows: a file without embeddings says so first
        raise UsageError(
            f"{clean_text(str(source))} ends in a partial line (a run killed or still writing): "
            "finish it with `clipcls label ... --resume` first"
        )


def _vector(value: Any, where: str, width: int | None) -> np.ndarray | None:
    """A row's embedding as float32 (saved as float32, so it reads back bit for bit): a unit
    vector as wide as the file's others (width: the first one's, where one was read), else a
    UsageError naming its line. A vector 1000 times too long ranked first with 1.000000."""
    if value is None:
        return None
    try:
        return check_embedding(value, width)
    except NotAnEmbedding as why:
        raise UsageError(f"{where}: the embedding {why}") from None


def read_saved(source: Path) -> SavedEmbeddings:
    """The embeddings a label run saved in source (JSONL or Parquet, by its name); relative
    paths are taken from the folder that run started in. UsageError for a file without them."""
    kind = format_of(source)
    if kind is None or not kind.holds_embeddings:
        raise no_embeddings(source)
    setup = _setup(source)
    cwd = text_to_path(setup["cwd"]) if isinstance(setup.get("cwd"), str) else None
    images: dict[str, SavedImage] = {}
    model = ""
    width: int | None = None  # every embedding in the file is as wide as the first
    for row, where in _rows(source, kind):
        text = row.get("path")
        if not isinstance(text, str) or not text:
            raise UsageError(f"{clean_text(str(source))} has a row with no path")
        path = text_to_path(text)
        if cwd and not is_url(path) and not os.path.isabs(path) and cwd != os.getcwd():
            path = os.path.join(cwd, path)  # as resuming takes them
        error, vector = row.get("error"), _vector(row.get("embedding"), where, width)
        width = width or (None if vector is None else len(vector))
        if not error and vector is None:
            error = f"no embedding saved for {clean_text(path)}"
        model = model or str(row.get("model") or "")
        saved = SavedImage(path, None if error else vector, str(error) if error else None)
        images.setdefault(path_key(path), saved)
    if not images:
        raise UsageError(f"{clean_text(str(source))} holds no rows")
    recorded = setup.get("model")
    return SavedEmbeddings(
        source,
        tuple(images.values()),
        model or (recorded if isinstance(recorded, str) else ""),
        _comparable(setup.get("model_key")),
        cwd if cwd and cwd != os.getcwd() else None,
    )
