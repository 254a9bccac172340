"""`--allow-dir` is a boundary: a file is opened beneath its root (openat2, else a walk that
follows no link) and read from that fd; links out, swapped links, FIFOs, devices and folders
are refused without blocking and without saying whether anything outside exists."""

import base64
import itertools
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import SAMPLE_IMAGES

from clipcls.client.protocol import Limits, RequestError, parse_request
from clipcls.errors import ImageError
from clipcls.server import roots as roots_module
from clipcls.server.roots import OUTSIDE, OpenRoots, resolve_roots

IMAGE = (SAMPLE_IMAGES / "chelsea.png").read_bytes()
SWAPPER = """
import os, sys, time
swap, outside = sys.argv[1], sys.argv[2]
targets, end, i = ["junk.png", outside + "/photo.png"], time.monotonic() + 120, 0
while time.monotonic() < end:
    os.symlink(targets[i % 2], swap + ".tmp")
    os.replace(swap + ".tmp", swap)
    i += 1
"""


@pytest.fixture(params=["openat2", "walk"])
def opener(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of opening beneath a root: openat2, and the walk where the kernel lacks it."""
    if request.param == "walk":

        def missing(dirfd: int, relative: str, flags: int = 0) -> int:
            raise NotImplementedError

        monkeypatch.setattr(roots_module, "openat2_beneath", missing)
    return str(request.param)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with a photo, a sub-folder, and links; outside/ with a secret beside it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "photo.png").write_bytes(IMAGE)
    (root / "sub" / "deep.png").write_bytes(IMAGE)
    (outside / "secret.png").write_bytes(b"SECRET" + IMAGE)
    (root / "inner-link.png").symlink_to(root / "sub" / "deep.png")  # absolute, stays inside
    (root / "out-exists.png").symlink_to(outside / "secret.png")
    (root / "out-missing.png").symlink_to(outside / "missing.png")
    (root / "out-relative.png").symlink_to("../outside/secret.png")
    (root / "zero.png").symlink_to("/dev/zero")
    (root / "sub-out").symlink_to(outside)
    os.mkfifo(root / "fifo.png")
    return tmp_path


def opened(roots: OpenRoots, path: Path | str) -> bytes:
    with roots.open(str(path)) as stream:
        return stream.read()


def refusal(roots: OpenRoots, path: Path | str) -> str:
    started = time.monotonic()
    with pytest.raises(ImageError) as caught:
        opened(roots, path)
    assert (
        time.monotonic() - started < 30
    )  # a hang guard: a FIFO blocks and /dev/zero reads forever
    return str(caught.value).replace(str(path), "PATH")


def test_files_beneath_the_root_are_read_and_nothing_outside(tree: Path, opener: str) -> None:
    root, outside = tree / "root", tree / "outside"
    roots = OpenRoots(resolve_roots([str(root)]))
    for inside in ("photo.png", "sub/deep.png", "inner-link.png", "sub/../photo.png"):
        assert opened(roots, root / inside) == IMAGE
    assert opened(roots, f"/{root}/./sub//deep.png") == IMAGE  # //, /./ are the same file
    assert opened(roots, f"/proc/self/root{root}/photo.png") == IMAGE
    # Outside and present, outside and missing, a link out: one message, nothing to tell.
    escapes = [
        outside / "secret.png",
        outside / "missing.png",
        root / "out-exists.png",
        root / "out-missing.png",
        root / "out-relative.png",
        root / "sub-out" / "secret.png",
        root / ".." / "outside" / "secret.png",
        root / "zero.png",
        "/etc/passwd",
        f"/proc/self/root{outside}/secret.png",
    ]
    assert {refusal(roots, path) for path in escapes} == {f"{OUTSIDE}: PATH"}
    assert refusal(roots, root / "fifo.png") == "not a regular file: PATH"
    assert refusal(roots, root / "sub") == "is a folder, not an image: PATH"
    assert refusal(roots, root / "nothing.png") == "file not found: PATH"  # inside: may be told


def test_a_link_swapped_in_after_the_check_leads_nowhere(
    tree: Path, opener: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path is resolved, then a component becomes a link out before the open: the open
    beneath the root refuses it (the old code opened the path again by name, following it)."""
    root = tree / "root"
    roots = OpenRoots(resolve_roots([str(root)]))
    real = roots_module.real_path

    def swapped(path: str) -> str:
        found = real(path)
        (root / "sub").rename(root / "sub-was")
        (root / "sub").symlink_to(tree / "outside")  # now root/sub/deep.png would be outside
        (tree / "outside" / "deep.png").write_bytes(b"SECRET")
        return found

    monkeypatch.setattr(roots_module, "real_path", swapped)
    assert refusal(roots, root / "sub" / "deep.png") == f"{OUTSIDE}: PATH"


def test_a_root_replaced_later_does_not_widen_access(tree: Path, opener: str) -> None:
    root, outside = tree / "root", tree / "outside"
    roots = OpenRoots(resolve_roots([str(root)]))
    root.rename(tree / "moved")
    root.symlink_to(outside)  # the root's name now leads to outside/
    assert refusal(roots, root / "secret.png") == f"{OUTSIDE}: PATH"
    root.unlink()
    root.mkdir()  # another folder under the root's name: the one named at start is what counts
    (root / "photo.png").write_bytes(b"planted")
    assert opened(roots, root / "photo.png") == IMAGE
    # A root that is itself a link is resolved once, at start.
    (tree / "link-root").symlink_to(tree / "moved")
    linked = OpenRoots(resolve_roots([str(tree / "link-root")]))
    (tree / "link-root").unlink()
    (tree / "link-root").symlink_to(outside)
    assert opened(linked, tree / "moved" / "photo.png") == IMAGE
    assert refusal(linked, tree / "link-root" / "secret.png") == f"{OUTSIDE}: PATH"


def test_a_link_swapped_in_a_loop_never_opens_the_outside_file(tree: Path, opener: str) -> None:
    root = tree / "root"
    roots = OpenRoots(resolve_roots([str(root)]))
    swap = root / "swap.png"
    swap.symlink_to("photo.png")
    done = threading.Event()

    def swapper() -> None:
        targets = ["photo.png", str(tree / "outside" / "secret.png")]
        i = 0
        while not done.is_set():
            (root / "swap.tmp").symlink_to(targets[i % 2])
            (root / "swap.tmp").replace(swap)  # atomic, as an attacker would swap it
            i += 1

    thread = threading.Thread(target=swapper)
    thread.start()
    seen: dict[str, int] = {"read": 0, "refused": 0, "leaked": 0}
    deadline = time.monotonic() + 30
    try:
        # At least 3,000 tries, and on until both outcomes were seen: on a loaded machine the
        # swapping thread may not run at all during the first few thousand.
        for tries in itertools.count():
            if tries >= 3000 and (seen["read"] and seen["refused"] or time.monotonic() > deadline):
                break
            if tries % 500 == 499:
                time.sleep(0.001)  # let the swapper run
            try:
                data = opened(roots, swap)
            except ImageError:
                seen["refused"] += 1
                continue
            seen["leaked" if data.startswith(b"SECRET") else "read"] += 1
    finally:
        done.set()
        thread.join()
    assert seen["leaked"] == 0, seen
    assert seen["read"] and seen["refused"], seen  # the race was run, both ways


def test_paths_that_name_no_file_are_400_and_outside_is_one_403(tree: Path) -> None:
    root, outside = tree / "root", tree / "outside"

    def status(path: str) -> tuple[int, str]:
        body = {"images": [{"path": path}], "labels": ["a", "b"]}
        try:
            parse_request(body, Limits(), [str(root)])
        except RequestError as error:
            return error.status, str(error)
        return 200, ""

    assert status(str(root / "photo.png")) == (200, "")
    assert status(str(root) + "/caf\udce9.png") == (200, "")  # a non-UTF-8 name, escaped
    assert status(str(root) + "/a\x00b.png")[0] == 400
    assert status(str(root) + "/lone\ud800.png")[0] == 400
    outside_answers = {
        status(str(path))
        for path in (
            outside / "secret.png",
            outside / "missing.png",
            root / "out-exists.png",
            root / "out-missing.png",
            root / "zero.png",
        )
    }
    assert outside_answers == {(403, "images[0].path is outside the server's --allow-dir roots")}


@pytest.mark.slow
def test_the_server_never_answers_for_a_file_outside_while_a_link_swaps(
    tiny_model: str, tree: Path
) -> None:
    """4 clients post the same path while a link under it swaps between a non-image inside
    and a photo outside: an answer with predictions could only come from the outside file."""
    from test_serve import Server

    root = tree / "root"
    (root / "junk.png").write_bytes(b"not an image")
    (tree / "outside" / "photo.png").write_bytes(IMAGE)
    swap = root / "swap.png"
    swap.symlink_to("junk.png")
    server = Server(tiny_model, "--allow-dir", str(root))
    # The swapper is its own process (as an attacker's would be), so it runs truly in parallel.
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(swap), str(tree / "outside")])

    def ask(_: int) -> str:
        status, answer = server.predict([{"path": str(swap)}])
        if status != 200 or "error" in answer:  # refused by the guard, or by the worker's parse
            return "refused"
        row = answer["predictions"][0]
        return "leaked" if "predictions" in row else "error row"

    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(ask, range(240)))
        fifo = server.predict([{"path": str(root / "fifo.png")}, _data()])
    finally:
        swapper.kill()
        swapper.wait()
        assert server.stop() == 0
    counts = {kind: answers.count(kind) for kind in ("refused", "error row", "leaked")}
    assert counts["leaked"] == 0, counts
    assert counts["refused"] and counts["error row"], counts  # the race was run
    assert fifo[0] == 200 and "not a regular file" in fifo[1]["predictions"][0]["error"]
    assert "predictions" in fifo[1]["predictions"][1]


def _data() -> dict[str, str]:
    return {"name": "chelsea.png", "data": base64.b64encode(IMAGE).decode()}
