"""`clipcls search` and `similar` under attack: the query image under another name, scores of
float16 rows, a full disk, the server's search spelling paths and meeting links out of its
roots; each answer checked against what a local run (or the arithmetic) says it must be."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipcls.cli import app

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
