"""The optional approximate index: its answers against exact search (recall@10), stored beside
the cache and reused until the collection changes, used by search from its size on, and the
exact fallback without usearch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from clipcls.backends.base import BackendConfig
from clipcls.backends.local import LocalBackend
from clipcls.cache import EmbeddingCache
from clipcls.errors import UsageError
from clipcls.search import ann
from clipcls.search.api import search
from clipcls.search.collect import Collection
from clipcls.search.query import top_k
from clipcls.settings import ModelSettings
from clipcls.terms import Query

needs_usearch = pytest.mark.skipif(
    importlib.util.find_spec("usearch") is None,
    reason="usearch is not installed (pip install 'clipcls[ann]')",
)


def unit_rows(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def collection_of(matrix: np.ndarray, model: str = "m") -> Collection:
    paths = tuple(f"/images/{i:06d}.jpg" for i in range(len(matrix)))
    return Collection(paths, matrix.astype(np.float16), (), model)


def planted(n: int, dim: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n random unit rows, and queries each with 10 rows planted near it (cosines spread from
    about 0.5 to 0.95, so that the order among them matters too)."""
    rng = np.random.default_rng(seed)
    matrix = unit_rows(rng.standard_normal((n, dim)))
    targets = unit_rows(rng.standard_normal((queries, dim)))
    spread = np.linspace(0.35, 1.8, 10)
    for target in targets:
        noise = unit_rows(rng.standard_normal((10, dim))) * spread[:, None]
        rows = rng.choice(n, size=10, replace=False)
        matrix[rows] = unit_rows(target + noise)
    return matrix, targets


@needs_usearch
@pytest.mark.slow  # building the index over 20,000 rows takes 20-35 s on two cores
def test_recall_at_10_against_exact_search(tmp_path: Path) -> None:
    matrix, targets = planted(20_000, 512, queries=40)
    collection = collection_of(matrix)
    found = exact = 0
    for target in targets:
        approximate = ann.ann_search(collection, target, 10, folder=tmp_path)
        truth = top_k(collection.matrix, target, 10)
        found += len({row for row, _ in approximate} & {row for row, _ in truth})
        exact += len(truth)
        scores = dict(truth)  # a row both find has exact search's score
        assert all(abs(score - scores[row]) < 1e-5 for row, score in approximate if row in scores)
    assert found / exact >= 0.95


@needs_usearch
def test_the_stored_index_is_reused_and_rebuilt_when_the_collection_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Path] = []
    build = ann._built
    monkeypatch.setattr(ann, "_built", lambda path, *rest: built.append(path) or build(path, *rest))
    matrix, targets = planted(2_000, 64, queries=1)
    first = ann.ann_search(collection_of(matrix), targets[0], 5, folder=tmp_path)
    assert len(built) == 1 and list(tmp_path.glob("*.usearch")) == built
    again = ann.ann_search(collection_of(matrix), targets[0], 5, folder=tmp_path)  # a new run's
    assert again == first and len(built) == 1

    changed = matrix.copy()
    changed[7] = targets[0]  # one image edited: now the query's best match
    answer = ann.ann_search(collection_of(changed), targets[0], 5, folder=tmp_path)
    assert answer[0][0] == 7 and answer[0][1] == pytest.approx(1.0, abs=1e-3)
    assert len(built) == 2 and list(tmp_path.glob("*.usearch")) == built[1:]  # the old one gone


@needs_usearch
def test_a_damaged_index_is_built_again(tmp_path: Path) -> None:
    matrix, targets = planted(500, 32, queries=1)
    first = ann.ann_search(collection_of(matrix), targets[0], 3, folder=tmp_path)
    (stored,) = tmp_path.glob("*.usearch")
    stored.write_bytes(b"not an index")
    assert ann.ann_search(collection_of(matrix), targets[0], 3, folder=tmp_path) == first
    assert stored.stat().st_size > len(b"not an index")


@needs_usearch
def test_skip_and_a_k_beyond_the_collection(tmp_path: Path) -> None:
    matrix, _ = planted(50, 16, queries=0)
    collection = collection_of(matrix)
    answer = ann.ann_search(collection, matrix[3], 100, skip=frozenset({3}), folder=tmp_path)
    assert [row for row, _ in answer] == [
        row for row, _ in top_k(collection.matrix, matrix[3], 49, frozenset({3}))
    ]


def test_the_index_is_used_from_its_size_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ann, "usearch_installed", lambda: True)
    assert not ann.use_ann(ann.ANN_ROWS - 1)
    assert ann.use_ann(ann.ANN_ROWS)
    monkeypatch.setattr(ann, "ANN_ROWS", 10)
    assert ann.use_ann(10) and not ann.use_ann(9)


def test_without_usearch_search_stays_exact_with_one_notice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(ann, "usearch_installed", lambda: False)
    lines: list[str] = []
    assert not ann.use_ann(ann.ANN_ROWS, lines.append)
    assert len(lines) == 1 and "pip install 'clipcls[ann]'" in lines[0]
    assert not ann.use_ann(ann.ANN_ROWS - 1, lines.append) and len(lines) == 1  # below: silent
    matrix, _ = planted(20, 8, queries=0)
    with pytest.raises(UsageError, match=r"clipcls\[ann\]"):
        ann.ann_search(collection_of(matrix), matrix[0], 3, folder=tmp_path)


@pytest.mark.parametrize("installed", [True, False], ids=["usearch", "without usearch"])
def test_a_search_over_the_size_goes_through_the_index_beside_the_cache(
    installed: bool, tiny_model: str, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if installed and importlib.util.find_spec("usearch") is None:
        pytest.skip("usearch is not installed (pip install 'clipcls[ann]')")
    cache = tmp_path / "cache"
    backend = LocalBackend(BackendConfig(ModelSettings(model=tiny_model), EmbeddingCache(cache)))
    exact = search(backend, [str(photos)], Query.parse("a cat"), k=3)
    monkeypatch.setattr(ann, "ANN_ROWS", 2)
    monkeypatch.setattr(ann, "usearch_installed", lambda: installed)
    lines: list[str] = []
    found = search(backend, [str(photos)], Query.parse("a cat"), k=3, notice=lines.append)
    assert [hit.path for hit in found.hits] == [hit.path for hit in exact.hits]
    assert [hit.score for hit in found.hits] == pytest.approx([hit.score for hit in exact.hits])
    assert len(list((cache / ann.FOLDER).glob("*.usearch"))) == (1 if installed else 0)
    assert len(lines) == (0 if installed else 1)
