"""Search over the images' embeddings: the collection (cache first, stored matrix reused only
while every file is as it was), the query arithmetic, exact top-k, and the commands."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from clipcls.backends.base import BackendConfig
from clipcls.backends.local import LocalBackend
from clipcls.cache import EmbeddingCache
from clipcls.errors import UsageError
from clipcls.prompts import load_templates
from clipcls.search.collect import collect, query_vector
from clipcls.search.query import combine, top_k
from clipcls.settings import ModelSettings
from clipcls.terms import Query, Term, parse_query


def _backend(model: str, cache: Path) -> LocalBackend:
    return LocalBackend(BackendConfig(ModelSettings(model=model), EmbeddingCache(cache)))


def test_a_query_parses_into_signed_terms_like_rclip() -> None:
    assert parse_query("a red car + sunset - blurry") == (
        Term("a red car", 1),
        Term("sunset", 1),
        Term("blurry", -1),
    )
    assert parse_query("t-shirt + a+b") == (Term("t-shirt", 1), Term("a+b", 1))
    with pytest.raises(UsageError, match="empty term"):
        parse_query("cat +  + dog")
    with pytest.raises(UsageError, match="only - terms"):
        parse_query(" - dog")


def test_terms_combine_by_sign_then_normalize() -> None:
    rows = np.eye(3, dtype=np.float32)
    found = combine(rows, [1, 1, -1])
    np.testing.assert_allclose(found, np.array([1, 1, -1]) / np.sqrt(3), rtol=1e-6)
    with pytest.raises(UsageError, match="no direction"):
        combine(rows[[0, 0]], [1, -1])


def test_top_k_in_blocks_equals_a_brute_force_ranking(monkeypatch: pytest.MonkeyPatch) -> None:
    import clipcls.search.query as query

    monkeypatch.setattr(query, "BLOCK", 7)  # many blocks, each cut to k
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(100, 16)).astype(np.float16)
    q = rng.normal(size=16).astype(np.float32)
    scores = matrix.astype(np.float32) @ q
    expected = [int(i) for i in np.argsort(-scores, kind="stable")[:10]]
    assert [row for row, _ in top_k(matrix, q, 10)] == expected
    assert [row for row, _ in top_k(matrix, q, 9, frozenset({expected[0]}))] == expected[1:]
    assert len(top_k(matrix, q, 500)) == 100


def test_collect_embeds_walks_and_ranks_like_brute_force(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    (photos / "broken.jpg").write_bytes(b"not an image")
    backend = _backend(tiny_model, tmp_path / "cache")
    found = collect(backend, [str(photos)])
    assert [Path(p).name for p in found.paths] == [
        "astronaut.png",
        "chelsea.png",
        "coffee.png",
        "rocket.jpg",
    ]
    assert [Path(p).name for p, _ in found.failures] == ["broken.jpg"]
    assert found.matrix.dtype == np.float16 and found.model == backend.model_id
    images = {p.path: p.embedding for p in backend.embed_images(found.paths)}
    for path, row in zip(found.paths, found.matrix, strict=True):
        np.testing.assert_allclose(row, images[path], atol=1e-3)
    vector = query_vector(
        backend, Query.parse("a cat + a rocket - coffee"), [], load_templates("photo")
    )
    assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5
    brute = np.argsort(-(found.matrix.astype(np.float32) @ vector), kind="stable")
    assert [row for row, _ in top_k(found.matrix, vector, 4)] == [int(i) for i in brute]


def test_nothing_to_search_is_a_usage_error(tiny_model: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    backend = _backend(tiny_model, tmp_path / "cache")
    with pytest.raises(UsageError, match="no images found"):
        collect(backend, [str(empty)])
    (empty / "bad.png").write_bytes(b"nope")
    with pytest.raises(UsageError, match="none of the 1 files could be read"):
        collect(backend, [str(empty)])
    with pytest.raises(UsageError, match="no query"):
        query_vector(backend, None, [], None)
    with pytest.raises(UsageError, match="cannot read query image"):
        query_vector(backend, None, [empty / "bad.png"], None)


def test_the_stored_matrix_is_reused_then_rebuilt_when_a_file_changes(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = collect(_backend(tiny_model, cache), [str(photos)])
    assert isinstance(first.matrix, np.ndarray)
    again = collect(_backend(tiny_model, cache), [str(photos)])
    assert isinstance(again.matrix, np.memmap)  # from the store, not from SQLite
    assert again.paths == first.paths and np.array_equal(again.matrix, first.matrix)
    # Same size, mtime put back: the inode (a replaced file) and ctime still tell.
    chelsea, rocket = photos / "chelsea.png", photos / "rocket.jpg"
    stat = chelsea.stat()
    replacement = photos / "new.tmp"
    replacement.write_bytes(rocket.read_bytes()[: stat.st_size].ljust(stat.st_size, b"\0"))
    os.replace(replacement, chelsea)
    os.utime(chelsea, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    rebuilt = collect(_backend(tiny_model, cache), [str(photos)])
    assert not isinstance(rebuilt.matrix, np.memmap)
    row = {Path(p).name: i for i, p in enumerate(rebuilt.paths)}
    # chelsea.png now holds rocket.jpg's bytes, padded after the JPEG's end to the same size.
    np.testing.assert_array_equal(
        rebuilt.matrix[row["chelsea.png"]], rebuilt.matrix[row["rocket.jpg"]]
    )


def test_clearing_the_cache_removes_the_stored_matrices(
    tiny_model: str, photos: Path, tmp_path: Path
) -> None:
    from clipcls.cache import clear_cache

    collect(_backend(tiny_model, tmp_path / "cache"), [str(photos)])
    assert any((tmp_path / "cache" / "search").iterdir())
    assert clear_cache(tmp_path / "cache") > 0
    assert not (tmp_path / "cache" / "search").exists()
