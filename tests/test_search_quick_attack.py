"""Attacks on the fast path of `clipcls search DIR "QUERY" --server URL`: argv forms, an
environment and server answers where it must print what the full command line prints, or
leave the run to it having printed nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_search_quick import FakeServer, fake, run  # noqa: F401 (fake: a fixture)

from clipcls.cli.quick import parse_quick, quick_search


def test_a_dash_among_the_inputs_is_the_full_command_lines_stdin() -> None:
    # `-` reads the paths to search from stdin, even where a folder named `-` exists
    assert parse_quick(["search", "-", "a cat", "--server", "http://s"], None) is None
    assert parse_quick(["search", "d", "-", "a cat", "--server", "http://s"], None) is None


def test_a_cache_dir_click_refuses_is_left_to_the_full_command_line(
    fake: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    afile = tmp_path / "afile"
    afile.write_text("")
    monkeypatch.setenv("CLIPCLS_CACHE_DIR", str(afile))  # --cache-dir's variable: a dir only
    assert quick_search(["search", str(fake.root), "a cat", "--server", fake.url]) is None
    assert capsys.readouterr() == ("", "")
    assert fake.requests == []
    done = run("search", "photos", "a cat", "--server", fake.url, cwd=tmp_path,
               env={"CLIPCLS_CACHE_DIR": str(afile)})  # fmt: skip
    assert done.returncode == 2 and "is a file" in done.stderr
    monkeypatch.setenv("CLIPCLS_CACHE_DIR", str(tmp_path / "not-yet"))  # created on first use
    assert quick_search(["search", str(fake.root), "a cat", "--server", fake.url, "-q"]) == 0
