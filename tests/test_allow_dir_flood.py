"""`serve --allow-dir` under a flood of requests while links under the root are swapped (to
files and folders outside, FIFOs, /dev/zero, the whole file system): nothing outside the root is
read, listed or answered, no request hangs, and good requests keep their answers. A search
lists each folder beneath its root, as a file is opened beneath it."""

import base64
import json
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SAMPLE_IMAGES, colour_images
from test_allow_dir import opener as opener  # the fixture: openat2, and the walk without it
from test_search_attack import served_search_listing

from clipcls.client.checks import RequestError
from clipcls.client.search_request import parse_search
from clipcls.server import roots as roots_module
from clipcls.server.roots import OUTSIDE, OpenRoots, resolve_roots


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/photos (three images and sub/ with one), root/notes (no image); outside/ with an
    image and outside/empty/ with none."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    colour_images(root / "photos", 3)
    colour_images(root / "photos" / "sub", 1)
    (root / "notes").mkdir()
    (root / "notes" / "a.txt").write_text("not an image")
    colour_images(outside, 1)
    (outside / "empty").mkdir()
    (outside / "empty" / "a.txt").write_text("not an image")
    os.mkfifo(root / "fifo")
    return tmp_path


def names(roots: OpenRoots, folder: Path) -> list[str]:
    return sorted(name for name, _ in roots.scan(folder))


@pytest.mark.usefixtures("opener")
def test_a_folder_is_listed_beneath_its_root_only(tree: Path) -> None:
    root, outside = tree / "root", tree / "outside"
    roots = OpenRoots(resolve_roots([str(root)]))
    assert names(roots, root / "photos") == ["000.png", "001.png", "002.png", "sub"]
    assert names(roots, root) == ["fifo", "notes", "photos"]  # the root itself
    assert dict(roots.scan(root / "photos"))["sub"] is True
    (root / "in-link").symlink_to(root / "photos" / "sub")
    assert names(roots, root / "in-link") == ["000.png"]  # a link within the root is fine
    for target in (outside, outside / "empty", Path("/"), Path("/dev"), root / "fifo"):
        (root / "swap").unlink(missing_ok=True)
        (root / "swap").symlink_to(target)
        with pytest.raises(OSError):  # never listed, never blocks (the FIFO)
            roots.scan(root / "swap")
    with pytest.raises(OSError):
        roots.scan(outside)


@pytest.mark.usefixtures("opener")
def test_a_folder_swapped_for_a_link_out_after_its_check_is_not_listed(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tree / "root"
    roots = OpenRoots(resolve_roots([str(root)]))
    real = roots_module.real_path

    def swapped(path: str) -> str:
        found = real(path)
        (root / "photos").rename(root / "photos-was")
        (root / "photos").symlink_to("/")  # now root/photos would be the whole file system
        return found

    monkeypatch.setattr(roots_module, "real_path", swapped)
    with pytest.raises(OSError):
        roots.scan(root / "photos")


served_search = served_search_listing


def test_a_search_folder_swapped_out_after_the_guard_is_refused_not_walked(tree: Path) -> None:
    root, outside = tree / "root", tree / "outside"
    listed: list[str] = []
    search, _ = served_search(root, listed)
    link = root / "link"
    link.symlink_to(root / "photos")
    body = {"search": {"folders": [str(link)], "text": "red", "k": 5}}
    request = parse_search(body, 50, [str(root)])  # the guard's check: inside, a folder
    assert len(search.answer(request)["search"]) == 4
    # Between the guard and the worker the link leads out: to a folder without images (the
    # old walk listed it and said "no images found", telling what lies outside), or to one
    # with an image. Either is refused as outside, and nothing outside is listed.
    for target in (outside / "empty", outside, Path("/dev")):
        link.unlink()
        link.symlink_to(target)
        listed.clear()
        with pytest.raises(RequestError) as refused:
            search.answer(request)
        assert (refused.value.status, str(refused.value)) == (
            403,
            f"the search folders hold links {OUTSIDE}",
        )
        assert listed == []


def test_a_sub_folder_swapped_out_during_the_walk_is_not_walked(tree: Path) -> None:
    root = tree / "root"
    listed: list[str] = []
    search, roots = served_search(root, listed)
    photos = root / "photos"
    body = {"search": {"folders": [str(photos)], "text": "red", "k": 5}}
    request = parse_search(body, 50, [str(root)])
    listing = roots.scan

    def swapping(folder: Path) -> list[tuple[str, bool]]:
        found = listing(folder)
        if folder == photos:  # sub/ was listed as a folder: now it leads to the whole disk
            (photos / "sub").rename(root / "sub-was")
            (photos / "sub").symlink_to("/")
        return found

    roots.scan = swapping  # type: ignore[method-assign]
    with pytest.raises(RequestError) as refused:
        search.answer(request)
    assert refused.value.status == 403
    assert listed == [str(photos)]  # "/" was never listed


# The flood: a real server, a swapping process, and a bounded number of requests.

SWAPPER = """
import os, sys, time
root, outside = sys.argv[1], sys.argv[2]
files = ["good.png", outside + "/secret.png", "fifo.png", outside + "/fifo.png", "/dev/zero",
         "sub", "nothing.png", "sub/deep.png", outside + "/pics"]
folders = ["sub", outside + "/pics", outside + "/empty", "/", "/dev", "/proc/self/fd",
           "fifo.png", "good.png", "sub"]
i, end = 0, time.monotonic() + 300
while time.monotonic() < end:
    for name, targets in (("swap.png", files), ("dswap", folders)):
        os.symlink(targets[i % len(targets)], os.path.join(root, name + ".tmp"))
        os.replace(os.path.join(root, name + ".tmp"), os.path.join(root, name))
    i += 1
    time.sleep(0.0002)
"""
SECRET = (SAMPLE_IMAGES / "rocket.jpg").read_bytes()


@pytest.fixture
def flood_tree(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    (outside / "pics").mkdir(parents=True)
    (outside / "empty").mkdir()
    (root / "good.png").write_bytes((SAMPLE_IMAGES / "chelsea.png").read_bytes())
    (root / "sub" / "deep.png").write_bytes((SAMPLE_IMAGES / "astronaut.png").read_bytes())
    (outside / "secret.png").write_bytes(SECRET)
    (outside / "pics" / "secret.png").write_bytes(SECRET)
    os.mkfifo(root / "fifo.png")
    os.mkfifo(outside / "fifo.png")
    (root / "swap.png").symlink_to("good.png")
    (root / "dswap").symlink_to("sub")
    return root, outside


def embedding(answer: dict[str, Any]) -> np.ndarray | None:
    row = answer["predictions"][0]
    return None if row.get("embedding") is None else np.asarray(row["embedding"], np.float32)


def same(a: np.ndarray | None, b: np.ndarray) -> bool:
    """The same image's embedding (bf16 on a CPU: to 1e-3 from another batch)."""
    return a is not None and abs(float(a @ b) - 1.0) < 1e-3


@pytest.mark.slow
def test_a_flood_while_links_swap_never_reads_outside_and_keeps_answering(
    tiny_model: str, flood_tree: tuple[Path, Path]
) -> None:
    pytest.importorskip("litserve")
    from test_serve import Server

    root, outside = flood_tree
    server = Server(tiny_model, "--allow-dir", str(root))
    secret = [{"name": "s.png", "data": base64.b64encode(SECRET).decode()}]
    leaked = embedding(server.predict(secret, embedding=True)[1])  # the outside file's
    good = embedding(server.predict([{"path": str(root / "good.png")}], embedding=True)[1])
    deep = embedding(server.predict([{"path": str(root / "sub/deep.png")}], embedding=True)[1])
    assert leaked is not None and good is not None and deep is not None
    assert not same(leaked, good) and not same(leaked, deep)

    def search(folder: Path) -> tuple[int, dict[str, Any]]:
        body = {"search": {"folders": [str(folder)], "text": "a cat", "k": 50}}
        return server.call("POST", "/v1/predict", json.dumps(body).encode())

    asks = [
        lambda: server.predict([{"path": str(root / "swap.png")}], embedding=True),
        lambda: server.predict([{"path": str(root / "dswap" / "deep.png")}], embedding=True),
        lambda: server.predict([{"path": str(root / "dswap" / "secret.png")}], embedding=True),
        lambda: search(root / "dswap"),
        lambda: search(root),
        lambda: server.predict([{"path": str(root / "good.png")}], embedding=True),
    ]

    def ask(i: int) -> tuple[int, int, dict[str, Any]]:
        return (i % len(asks), *asks[i % len(asks)]())  # urllib's 60 s timeout: no hang

    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(root), str(outside)])
    try:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(ask, range(300)))
    finally:
        swapper.kill()
        swapper.wait()
    try:
        seen: Counter[str] = Counter()
        for kind, status, answer in answers:
            assert "no images found" not in json.dumps(answer), answer  # listed outside
            if status == 200 and kind == 5:  # good.png: always its own answer
                assert same(embedding(answer), good), answer
            elif status == 200 and kind < 3 and "embedding" in answer["predictions"][0]:
                vector = embedding(answer)
                assert vector is None or same(vector, good) or same(vector, deep), answer
                seen["read" if vector is not None else "error row"] += 1
            elif status == 200 and kind >= 3:
                scores = {Path(hit["path"]).name: hit["score"] for hit in answer["search"]}
                assert not any("secret" in name for name in scores), answer
                if kind == 4 and "swap.png" in scores:  # a link in the root: an image in it
                    near = [abs(scores["swap.png"] - scores[n]) for n in ("good.png", "deep.png")]
                    assert min(near) < 1e-3, answer  # the same image, embedded in another batch
                seen["searched"] += 1
            else:
                assert status in (400, 403) and "error" in answer, (status, answer)
                seen["refused"] += 1
        assert all(seen[k] for k in ("read", "error row", "searched", "refused")), seen
        # The server is up and answers as before the flood.
        after = server.predict([{"path": str(root / "good.png")}], embedding=True)
        assert after[0] == 200 and same(embedding(after[1]), good)
        assert server.call("GET", "/healthz")[0] == 200
    finally:
        assert server.stop() == 0
