"""Round three of attacks on today's changes: stored search listings in a cache folder that
cannot be written, a saved file whose model is a folder named from where it was saved, and a
served search past its budget (the server connection's part: test_attack_round3_wire.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import colour_images, write_tiny_model
from test_search_attack import served_search
from typer.testing import CliRunner

from clipcls.backends.saved import _from_here
from clipcls.cli import app
from clipcls.client.checks import RequestError
from clipcls.client.protocol import ImageRef
from clipcls.client.search_request import SearchRequest
from clipcls.output.saved import SavedEmbeddings
from clipcls.pipeline import PreparedImage
from clipcls.search.store import KEPT, Stored, load_stored, prune_stored, save_stored, versions
from clipcls.server.searching import Budget
from clipcls.terms import Query

runner = CliRunner()


def run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


def test_a_search_folder_that_cannot_be_written_only_stores_nothing(tmp_path: Path) -> None:
    # `sudo clipcls search` once left <cache>/search to root (or a file took its name): the
    # search had its answer, then stopped with a PermissionError traceback while storing it.
    image = tmp_path / "a.jpg"
    image.write_bytes(b"x")
    found = versions([str(image)])
    assert found is not None
    stored = Stored(np.ones((1, 4), np.float16), (), "m")
    taken = tmp_path / "cache" / "search"
    taken.parent.mkdir()
    taken.write_text("not a folder")
    save_stored(taken / ("a" * 64), found, stored)  # no error: only slower next time
    assert taken.read_text() == "not a folder"
    assert load_stored(taken / ("a" * 64), found) is None


def test_links_planted_in_the_search_folder_never_lose_their_targets(tmp_path: Path) -> None:
    # Pruning and saving remove folders: a link named like a listing, or like a half-written
    # store left for an hour, must go at most itself, never what it points to.
    outside = tmp_path / "photos"
    outside.mkdir()
    (outside / "keep.jpg").write_bytes(b"mine")
    parent = tmp_path / "cache" / "search"
    parent.mkdir(parents=True)
    listed, half = parent / ("b" * 64), parent / ".new-link"
    listed.symlink_to(outside, target_is_directory=True)
    half.symlink_to(outside, target_is_directory=True)
    os.utime(outside, (1, 1))  # "old": a stat through the link says an hour is long past
    (parent / ("c" * 64)).write_text("a file named like a listing")
    found = versions([str(outside / "keep.jpg")])
    assert found is not None
    stored = Stored(np.ones((1, 4), np.float16), (), "m")
    save_stored(listed, found, stored)  # the listing's own name: written nowhere through it
    for index in range(3):
        save_stored(parent / f"{index:064x}", found, stored)
    prune_stored(parent, budget=0)
    assert sorted(p.name for p in outside.iterdir()) == ["keep.jpg"]
    assert (outside / "keep.jpg").read_bytes() == b"mine"


def test_a_read_only_search_folder_leaves_the_search_its_answer(
    tiny_model: str, photos: Path, isolated_caches: Path
) -> None:
    search = isolated_caches / "search"
    search.mkdir(parents=True)
    search.chmod(0o555)
    try:
        with open(search / ".probe", "w"):
            pytest.skip("this user writes in a read-only folder (root)")
    except PermissionError:
        pass
    try:
        done = run("search", str(photos), "a cat", "--model", tiny_model, "-f", "jsonl", "-q")
    finally:
        search.chmod(0o755)
    assert done.exit_code == 0, done.output
    assert len(done.stdout.splitlines()) == 4


@pytest.fixture
def moved_run(tmp_path: Path, photos: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A label run saved with `--model local-dir:model` (a folder beside it), then looked at
    from another folder."""
    write_tiny_model(tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    saved = run(
        "label", "photos", "-l", "cat,dog", "--model", "local-dir:model",
        "--save-embeddings", "-o", "run.jsonl", "-q",
    )  # fmt: skip
    assert saved.exit_code == 0, saved.output
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tmp_path / "run.jsonl"


def test_a_files_relative_model_folder_is_found_from_another_folder(moved_run: Path) -> None:
    # The rows' paths are taken from the folder the saving run started in; its relative
    # local-dir: model was looked for here: "--model local-dir:model: model is not a folder",
    # though no --model was given.
    saved = str(moved_run)
    scored = run("predict", "-l", "cat,dog", "--from-embeddings", saved, "-f", "jsonl", "-q")
    assert scored.exit_code == 0, scored.output
    assert len(scored.stdout.splitlines()) == 4
    found = run("search", "a cat", "--from-embeddings", saved, "-f", "jsonl", "-q", "-k", "2")
    assert found.exit_code == 0, found.output
    assert len(found.stdout.splitlines()) == 2


def test_a_files_relative_weights_file_is_taken_from_where_it_was_saved(tmp_path: Path) -> None:
    # `label --model ViT-B-32 --pretrained w.pt` records ViT-B-32:w.pt; from another folder
    # the tag was no file and no open_clip tag, and the file's own model was refused as
    # "not of --model ViT-B-32:w.pt".
    (tmp_path / "w.pt").write_bytes(b"weights")

    def model_from_here(model: str) -> str:
        saved = SavedEmbeddings(tmp_path / "run.jsonl", (), model, None, str(tmp_path))
        return _from_here(saved).model

    assert model_from_here("ViT-B-32:w.pt") == f"ViT-B-32:{tmp_path / 'w.pt'}"
    assert model_from_here("local-dir:model") == f"local-dir:{tmp_path / 'model'}"
    for kept in ("ViT-B-32:openai", "ViT-B-32", "hf-hub:org/w.pt", "local-dir:/m", "ViT-B-32:/w"):
        assert model_from_here(kept) == kept


class _NoModel:
    """Stands in for ClipModel: a run that tries to load the model fails the test."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")


def test_dedupe_of_a_file_that_records_no_model_loads_none(
    tiny_model: str, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rows without a model column, their setup record not copied along: nothing could be
    # checked, yet the default model was loaded (a 600 MB first download; offline, an error)
    # for a dedupe that asks no text of it.
    saved = tmp_path / "run.jsonl"
    done = run(
        "label", str(photos), "-l", "cat,dog", "--model", tiny_model,
        "--save-embeddings", "-o", str(saved), "-q",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    rows = [json.loads(line) for line in saved.read_text().splitlines()]
    saved.write_text("".join(json.dumps({**row, "model": None}) + "\n" for row in rows))
    Path(f"{saved}.clipcls.json").unlink()
    monkeypatch.setattr("clipcls.engine.model.ClipModel", _NoModel)
    grouped = run("dedupe", "--from-embeddings", str(saved), "--threshold", "0.5", "-f", "csv")
    assert grouped.exit_code == 0, grouped.output
    assert grouped.stdout.startswith("group,path,score,keep")
    cat = str(photos / "chelsea.png")
    near = run("similar", cat, "--from-embeddings", str(saved), "-k", "2", "-f", "csv", "-q")
    assert near.exit_code == 0, near.output
    assert len(near.stdout.splitlines()) == 3 and cat not in near.stdout


def test_a_files_model_whose_weights_changed_is_not_called_an_asked_model(
    tmp_path: Path, photos: Path, moved_run: Path
) -> None:
    # The model folder the file records was exported again: the refusal said "not of --model
    # local-dir:model", a --model nobody gave, under the very name the file records.
    write_tiny_model(tmp_path / "model", seed=5)
    refused = run("predict", "-l", "cat,dog", "--from-embeddings", str(moved_run), "-q")
    assert refused.exit_code == 2
    assert "--model" not in refused.stderr and "weights are now others" in refused.stderr


def test_a_served_search_past_its_budget_decodes_little_before_it_says_so(
    tmp_path: Path,
) -> None:
    # `serve --max-images 8` over a folder of new photos: the whole first chunk (256 files)
    # was decoded and resized before the 409 that its ninth miss already decided, holding
    # the worker from every other client, and the fast path's refusal sends the search twice.
    colour_images(tmp_path / "photos", 60)
    search = served_search(tmp_path)
    decoded: list[str] = []
    prepare = search.prepare

    def counted(ref: ImageRef) -> PreparedImage:
        decoded.append(ref.name)
        return prepare(ref)

    search.prepare = counted
    search.budget = Budget(images=8, seconds=60.0)
    with pytest.raises(RequestError) as refused:
        search.answer(SearchRequest((str(tmp_path / "photos"),), Query.parse("red"), 3))
    assert refused.value.status == 409
    assert len(decoded) <= 8 + 8  # the budget, and one pass of the image tower (8 here)
    assert search.embedded == 0


@pytest.mark.slow  # starts a clipcls server
def test_a_search_past_a_real_servers_budget_ranks_as_a_local_one_then_is_served_warm(
    tiny_model: str, tmp_path: Path
) -> None:
    from test_fewshot_serve import free_port, wait_for_info
    from test_search_server import QUERY, call, local_search, whole_search

    folder = tmp_path / "allowed" / "photos"
    colour_images(folder, 40)  # five times --max-images, none cached by the server
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    budget = ("--max-images", "8")
    command = [sys.executable, "-m", "clipcls", "serve", "--model", tiny_model, "--precision"]
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(
            [*command, "fp32", "--port", str(port), "--allow-dir", str(folder.parent), *budget],
            stderr=log,
            env={**os.environ, "CLIPCLS_CACHE_DIR": str(tmp_path / "server-cache")},
        )
    try:
        wait_for_info(server, url)
        with pytest.MonkeyPatch.context() as patched:  # a cache of its own: the client's
            patched.setenv("CLIPCLS_CACHE_DIR", str(tmp_path / "local-cache"))  # stays empty
            here = local_search(folder, tiny_model)
        refused = whole_search(folder, url)  # 409: the full command line searches here
        assert "typer" in refused.stderr.splitlines()[-1], refused.stderr
        assert [json.loads(line) for line in refused.stdout.splitlines()] == here
        body = {"search": {"folders": [str(folder)], "text": QUERY, "k": 5}}
        warm = call(f"{url}/v1/predict", body)  # the client's predict requests filled its cache
        assert warm["embedded"] == 0
        assert [hit["path"] for hit in warm["search"]] == [row["path"] for row in here[:5]]
        quick = whole_search(folder, url)  # served now, by the fast path
        assert quick.stderr.splitlines()[-1] == "loaded:", quick.stderr
        assert [json.loads(line) for line in quick.stdout.splitlines()] == here
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_indexes_of_other_listings_do_not_pile_up(tmp_path: Path) -> None:
    # A library of a million photos that grows by one a day is a new listing each search, and
    # each built its approximate index (GBs) beside the older ones, never removed; a killed
    # build's half-written index stayed too.
    from usearch.index import Index

    from clipcls.search import ann

    folder = tmp_path / "ann"
    folder.mkdir()
    older = []
    for index in range(KEPT + 3):
        path = folder / f"{index:032x}.{0:032x}.usearch"
        path.write_bytes(b"an index")
        os.utime(path, (1000 + index, 1000 + index))
        older.append(path)
    killed = folder / ".new-x.usearch"
    killed.write_bytes(b"half")
    os.utime(killed, (1, 1))
    built = Index(ndim=4, metric="cos")
    built.add(np.arange(2, dtype=np.uint64), np.ones((2, 4), np.float32))
    newest = folder / f"{'f' * 32}.{0:032x}.usearch"
    ann._save(built, newest)
    assert newest.exists() and not killed.exists()
    assert [path.exists() for path in older] == [False] * 4 + [True] * (KEPT - 1)
