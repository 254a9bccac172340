"""`clipcls search` and `similar` under attack: the query image under another name, scores of
float16 rows, a full disk, the server's search spelling paths and meeting links out of its
roots; each answer checked against what a local run (or the arithmetic) says it must be."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeEncoder, colour_images, jsonl
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.client.checks import RequestError
from clipcls.client.protocol import ImageRef
from clipcls.client.search_request import SearchRequest
from clipcls.images import iter_image_paths, load_image
from clipcls.pipeline import PreparedImage
from clipcls.search.query import top_k
from clipcls.search.served import _as_given
from clipcls.server.roots import OpenRoots, resolve_roots
from clipcls.server.searching import ServedSearch
from clipcls.terms import Query

runner = CliRunner()


def run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


def similar_paths(image: Path, folder: Path, model: str, *more: str) -> list[str]:
    done = run("similar", str(image), str(folder), "--model", model, "-f", "jsonl", "-q", *more)
    assert done.exit_code == 0, done.output
    return [row["path"] for row in jsonl(done.stdout)]


def test_similar_leaves_the_image_out_under_any_name(tiny_model: str, photos: Path) -> None:
    # a link to a file of the set, a hard link to one, and a link inside the set: each is the
    # image itself (the same file), not an image like it
    os.symlink(photos / "chelsea.png", photos.parent / "link.png")
    os.link(photos / "coffee.png", photos.parent / "hard.png")
    os.symlink("rocket.jpg", photos / "z-rocket-link.jpg")
    found = similar_paths(photos.parent / "link.png", photos, tiny_model)
    assert str(photos / "chelsea.png") not in found and len(found) == 4
    assert similar_paths(photos.parent / "link.png", photos, tiny_model, "-k", "1") == found[:1]
    found = similar_paths(photos.parent / "hard.png", photos, tiny_model)
    assert str(photos / "coffee.png") not in found and len(found) == 4
    found = similar_paths(photos / "rocket.jpg", photos, tiny_model)
    assert str(photos / "z-rocket-link.jpg") not in found and len(found) == 3
    found = similar_paths(photos / "z-rocket-link.jpg", photos, tiny_model)
    assert str(photos / "rocket.jpg") not in found and len(found) == 3


def test_a_cosine_is_never_above_one_though_float16_rows_are_not_quite_unit() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(200, 64))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    matrix = rows.astype(np.float16)  # each row 1 +- 5e-4 long
    long_rows = np.flatnonzero(np.einsum("ij,ij->i", *[matrix.astype(np.float32)] * 2) > 1)
    assert len(long_rows)
    query = matrix[long_rows[0]].astype(np.float32)  # an image whose copy is in the set
    query = query / np.linalg.norm(query)
    (row, score), *_ = top_k(matrix, query, 3)
    assert row == long_rows[0] and score <= 1.0


def test_a_full_disk_is_one_line_not_a_traceback(tiny_model: str, photos: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    for args in (["search", str(photos), "a cat"], ["dedupe", str(photos)]):
        done = run(*args, "--model", tiny_model, "-q", "-f", "csv", "-o", "/dev/full")
        assert done.exit_code == 1, done.output
        assert done.stderr.strip() == "error: cannot write /dev/full: No space left on device"


@pytest.mark.parametrize("given", [".", "./photos", "photos/", "photos//", "./photos/."])
def test_served_hits_are_spelled_as_the_local_walk_spells_them(
    photos: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    monkeypatch.chdir(photos if given == "." else photos.parent)
    walked = [str(path) for path in iter_image_paths([given])]
    absolute = {os.path.abspath(given): given}
    served = [os.path.join(os.path.abspath(given), os.path.basename(p)) for p in walked]
    assert [_as_given(path, absolute) for path in served] == walked


def served_search(root: Path) -> ServedSearch:
    """A server's search over FakeEncoder embeddings, reading files as the worker does:
    beneath the --allow-dir root, never through a link out of it."""
    return served_search_listing(root, [])[0]


def served_search_listing(root: Path, listed: list[str]) -> tuple[ServedSearch, OpenRoots]:
    """served_search, and its roots; listed hears each folder the walk listed."""
    encoder, roots = FakeEncoder(), OpenRoots(resolve_roots([str(root)]))

    def prepare(ref: ImageRef) -> PreparedImage:
        try:
            with roots.open(ref.name) as stream:
                return PreparedImage(ref.name, encoder.prepare(load_image(ref.name, data=stream)))
        except Exception as error:  # noqa: BLE001 -- as the worker: a failure is its row
            return PreparedImage(ref.name, error=str(error))

    def scan(folder: Path) -> list[tuple[str, bool]]:
        found = roots.scan(folder)
        listed.append(str(folder))
        return found

    return ServedSearch(encoder, encoder, None, prepare, scan, ThreadPoolExecutor(1), 8), roots


def test_a_served_search_refuses_a_folder_linking_out_of_its_roots(tmp_path: Path) -> None:
    # The server may not read the file a link leads to outside its roots, so its ranking would
    # lack an image the client's own search has: it refuses, and the client searches itself.
    root, outside = tmp_path / "root", tmp_path / "outside"
    inside = colour_images(root / "photos", 3)
    (secret,) = colour_images(outside, 1)
    search = served_search(root)
    request = SearchRequest((str(root / "photos"),), Query.parse("red"), 5)
    assert [hit["path"] for hit in search.answer(request)["search"]] != []
    os.symlink(secret, root / "photos" / "009.png")
    with pytest.raises(RequestError) as refused:
        search.answer(request)
    assert refused.value.status == 403
    os.unlink(root / "photos" / "009.png")
    os.symlink(inside[0], root / "photos" / "009.png")  # a link within the roots is fine
    assert len(search.answer(request)["search"]) == 4
