"""Issue 36: a run whose default model has none of the files cached names the one other model
that has them (before loading), and `clipcls models --cached` lists the local-dir: folders
this machine loaded models from, marking those since gone."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE_IMAGES, write_tiny_model
from typer.testing import CliRunner

from clipcls.cache import EmbeddingCache
from clipcls.cli.commands import app
from clipcls.engine.local_dirs import FILE_NAME, note_local_dir, used_local_dirs
from clipcls.recorded import other_cached_model
from clipcls.settings import ModelSettings

HINT = "these files are cached for"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def predict(*args: str) -> str:
    code, _, err = run("predict", str(SAMPLE_IMAGES), "-l", "cat,dog", "--precision", "fp32", *args)
    assert code == 0, err
    return err


def test_a_default_model_without_these_files_names_the_one_that_has_them(
    monkeypatch: pytest.MonkeyPatch, tiny_model: str, tiny_biased_model: str
) -> None:
    predict("-m", tiny_model)
    monkeypatch.setenv("CLIPCLS_MODEL", tiny_biased_model)
    err = predict()
    assert f"warning: {HINT} {tiny_model}; did you mean -m {tiny_model}?" in err
    assert err.index(HINT) < err.index(f"model {tiny_biased_model} on")  # before loading
    # the default model now has them: no hint; nor when -m names the model
    assert HINT not in predict()
    monkeypatch.delenv("CLIPCLS_MODEL")
    monkeypatch.setenv("CLIPCLS_CACHE_DIR", str(Path(os.environ["CLIPCLS_CACHE_DIR"]) / "b"))
    predict("-m", tiny_model)
    assert HINT not in predict("-m", tiny_biased_model)


def test_two_other_models_are_no_hint(
    monkeypatch: pytest.MonkeyPatch, tiny_model: str, tiny_biased_model: str, tmp_path: Path
) -> None:
    predict("-m", tiny_model)
    predict("-m", tiny_biased_model)
    third = f"local-dir:{write_tiny_model(tmp_path / 'third', seed=7)}"
    monkeypatch.setenv("CLIPCLS_MODEL", third)
    assert HINT not in predict()


def test_the_look_up_is_by_model_key_not_a_scan(
    isolated_caches: Path, tiny_model: str, tiny_biased_model: str
) -> None:
    predict("-m", tiny_model)
    statements: list[str] = []
    cache = EmbeddingCache(isolated_caches)
    assert cache.db is not None
    cache.db.set_trace_callback(statements.append)
    paths = sorted(str(p) for p in SAMPLE_IMAGES.iterdir())
    asked = ModelSettings(tiny_biased_model, precision="fp32")
    assert other_cached_model(cache, asked, paths) == tiny_model
    images = [s for s in statements if "FROM images" in s]
    assert images and all("WHERE model = " in s for s in images)
    plan = sqlite3.connect(cache.path).execute(
        "EXPLAIN QUERY PLAN SELECT path FROM images WHERE model = ? AND path IN (?, ?)",
        ("k", b"a", b"b"),
    )
    assert any("INDEX" in row[-1] for row in plan)  # the primary key's index, not SCAN images
    # the asked model's own rows, or nothing cached at all: no other model named
    assert other_cached_model(cache, ModelSettings(tiny_model, precision="fp32"), paths) is None
    assert other_cached_model(cache, asked, [str(REPO / "README.md")]) is None
    assert other_cached_model(None, asked, paths) is None
    # damaged records are passed over, not trusted
    fields = ("pretrained", "device", "precision", "logit_scale", "logit_bias", "text_cache_key")
    wrong = {"model": 5, "image_cache_key": [1], "draft_size": None, **dict.fromkeys(fields)}
    cache.put_record("foreign", json.dumps(wrong))
    cache.put_record("broken", "[" * 100_000)
    assert other_cached_model(cache, asked, paths) == tiny_model
    assert cache.failure is None


def cached_rows(*args: str) -> list[dict[str, object]]:
    code, out, err = run("models", "--cached", "--json", *args)
    assert code == 0, err
    rows: list[dict[str, object]] = json.loads(out)
    return rows


def test_models_cached_lists_the_local_dirs_used_and_marks_the_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cached_rows() == []
    kept, gone = (write_tiny_model(tmp_path / name) for name in ("kept", "gone[/b]"))
    predict("-m", f"local-dir:{gone}")
    monkeypatch.chdir(tmp_path)
    predict("-m", "local-dir:kept")  # recorded absolute
    shutil.rmtree(gone)
    rows = cached_rows()
    assert [(r["model"], r["cached"], r["pretrained"]) for r in rows] == [
        (f"local-dir:{kept}", True, None),
        (f"local-dir:{gone}", False, None),
    ]
    monkeypatch.setenv("CLIPCLS_MODEL", f"local-dir:{kept}")
    assert [r["default"] for r in cached_rows()] == [True, False]
    assert [r["model"] for r in cached_rows("--filter", "[/b]")] == [f"local-dir:{gone}"]
    code, out, _ = run("models", "--cached")
    assert code == 0
    assert "gone[/b]" in out and " gone " in out  # markup shown literally, the mark in its column


@pytest.mark.parametrize(
    "damage",
    [b"{not json", b"[]", b'{"folders": []}', b'{"folders": {"rel": 1, "/x": "y"}}', b"\xff\xfe"],
)
def test_a_damaged_list_is_an_empty_one_and_is_rewritten(
    isolated_caches: Path, tiny_model: str, damage: bytes
) -> None:
    isolated_caches.mkdir(parents=True, exist_ok=True)
    (isolated_caches / FILE_NAME).write_bytes(damage)
    assert cached_rows() == []
    predict("-m", tiny_model)
    assert [r["model"] for r in cached_rows()] == [tiny_model]


def test_a_list_that_is_a_fifo_or_a_device_is_no_list(isolated_caches: Path) -> None:
    isolated_caches.mkdir(parents=True, exist_ok=True)
    os.mkfifo(isolated_caches / FILE_NAME)  # read non-blocking: never waits for a writer
    assert used_local_dirs(isolated_caches) == []
    (isolated_caches / FILE_NAME).unlink()
    (isolated_caches / FILE_NAME).symlink_to("/dev/zero")
    assert used_local_dirs(isolated_caches) == []
    note_local_dir(ModelSettings("local-dir:/models/x", cache_dir=isolated_caches))
    assert [f.path for f in used_local_dirs(isolated_caches)] == ["/models/x"]
    assert not (isolated_caches / FILE_NAME).is_symlink()  # replaced by a file, /dev/zero kept


def test_a_folder_name_that_is_not_utf8_is_kept(isolated_caches: Path) -> None:
    name = os.fsdecode(b"/models/caf\xe9")
    note_local_dir(ModelSettings(f"local-dir:{name}", cache_dir=isolated_caches))
    assert [f.path for f in used_local_dirs(isolated_caches)] == [name]
    assert (isolated_caches / FILE_NAME).read_bytes().isascii()


NOTER = textwrap.dedent(
    """
    import sys
    from clipcls.engine.local_dirs import note_local_dir
    from clipcls.settings import ModelSettings
    for i in range(30):
        note_local_dir(ModelSettings(f"local-dir:/m/{sys.argv[1]}{i}", cache_dir=sys.argv[2]))
    """
)


def test_two_processes_noting_at_once_lose_nothing(isolated_caches: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    notes = [
        subprocess.Popen([sys.executable, "-c", NOTER, who, str(isolated_caches)], env=env)
        for who in ("a", "b")
    ]
    assert [n.wait(timeout=120) for n in notes] == [0, 0]
    found = {f.path for f in used_local_dirs(isolated_caches)}
    assert found == {f"/m/{who}{i}" for who in "ab" for i in range(30)}
