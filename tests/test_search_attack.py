"""`clipcls search` and `similar` under attack: the query image under another name, scores of
float16 rows, a full disk, the server's search spelling paths and meeting links out of its
roots; each answer checked against what a local run (or the arithmetic) says it must be."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipcls.cli import app
from clipcls.images import iter_image_paths
from clipcls.search.api import _as_given

runner = CliRunner()


def run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


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
