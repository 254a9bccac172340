"""The embedding cache: re-runs reuse it, it stays bounded and shared between processes, and
no cache state ever crashes a run or changes an answer."""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    SAMPLE_IMAGES,
    CountingEncoder,
    colour_images,
    fp32,
    jsonl,
)
from PIL import Image
from typer.testing import CliRunner

from clipcls.cache import EmbeddingCache
from clipcls.classify import Classifier
from clipcls.cli import app
from clipcls.engine.model import ClipModel
from clipcls.filekey import FileKey
from clipcls.settings import ModelSettings, Precision


def test_cache_makes_reruns_and_new_labels_free(tmp_path: Path) -> None:
    paths = colour_images(tmp_path / "imgs", 10)
    (tmp_path / "imgs" / "bad.png").write_bytes(b"nope")
    paths.insert(3, tmp_path / "imgs" / "bad.png")
    cache = EmbeddingCache(tmp_path / "cache")
    encoder = CountingEncoder()
    first = list(Classifier(encoder, ["r", "g"], ["a {}", "b {}"], 4, cache).classify_paths(paths))
    assert encoder.images_encoded == 10 and encoder.texts_encoded == 4
    again = list(Classifier(encoder, ["r", "g"], ["a {}", "b {}"], 4, cache).classify_paths(paths))
    assert again == first
    assert encoder.images_encoded == 10 and encoder.texts_encoded == 4  # nothing recomputed
    relabeled = Classifier(encoder, ["r", "blue"], ["a {}", "b {}"], 4, cache)
    list(relabeled.classify_paths(paths))
    assert encoder.images_encoded == 10 and encoder.texts_encoded == 6  # only the new prompts
    # An edited file (new size or mtime) is embedded again, and only it.
    Image.new("RGB", (9, 9), (1, 2, 3)).save(paths[0])
    list(relabeled.classify_paths(paths))
    assert encoder.images_encoded == 11


def test_cache_keys_follow_weights_precision_and_decoding(tiny_model: str) -> None:
    keys = {
        fp32(tiny_model).plan.image_cache_key,
        fp32(tiny_model, exact_decode=True).plan.image_cache_key,
        ClipModel(ModelSettings(model=tiny_model, precision=Precision.BF16)).plan.image_cache_key,
    }
    assert len(keys) == 3
    assert fp32(tiny_model).plan.image_cache_key == fp32(tiny_model).plan.image_cache_key
    assert fp32(tiny_model).plan.text_cache_key != fp32(tiny_model).plan.image_cache_key


def test_cache_stays_within_its_bound(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache", max_bytes=400_000)
    vector = np.full(512, 512**-0.5, dtype=np.float32)
    for batch in range(20):
        items = [(FileKey(f"/img/{batch}-{i}.jpg", 1, 1), vector) for i in range(100)]
        cache.put_images("model", items)
        assert cache.used_bytes() <= 400_000
    info = cache.info()
    assert 0 < info.images < 2000
    recent = cache.get_images("model", [FileKey("/img/19-99.jpg", 1, 1)])
    assert "/img/19-99.jpg" in recent  # the newest rows survive eviction


def test_reads_refresh_old_rows_so_eviction_spares_them(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache", max_bytes=10**9)
    vector = np.full(512, 512**-0.5, dtype=np.float32)
    cache.put_images("m", [(FileKey(f"/img/{i}.jpg", 1, 1), vector) for i in range(20)])
    cache.put_texts("m", [("old text", vector), ("other text", vector)])
    day_ago = time.time() - 86400
    assert cache.db is not None
    cache.db.execute("UPDATE images SET used = ?", (day_ago,))
    cache.db.execute("UPDATE texts SET used = ?", (day_ago,))
    cache.get_images("m", [FileKey("/img/0.jpg", 1, 1)])
    cache.get_texts("m", ["old text"])
    marks = dict(cache.db.execute("SELECT path, used FROM images").fetchall())
    assert marks[b"/img/0.jpg"] > day_ago and marks[b"/img/1.jpg"] == day_ago
    texts = dict(cache.db.execute("SELECT text, used FROM texts").fetchall())
    assert texts[b"old text"] > day_ago and texts[b"other text"] == day_ago
    cache.max_bytes = cache.used_bytes() - 1  # the next put must evict a tenth of the images
    cache.put_images("m", [(FileKey("/img/new.jpg", 1, 1), vector)])
    assert "/img/0.jpg" in cache.get_images("m", [FileKey("/img/0.jpg", 1, 1)])
    assert "/img/1.jpg" not in cache.get_images("m", [FileKey("/img/1.jpg", 1, 1)])


def test_reading_fresh_rows_writes_nothing(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    cache.put_images("m", [(FileKey("/img/a.jpg", 1, 1), np.full(8, 8**-0.5, dtype=np.float32))])
    before = cache.db.total_changes
    assert "/img/a.jpg" in cache.get_images("m", [FileKey("/img/a.jpg", 1, 1)])
    assert cache.db.total_changes == before  # a warm re-run leaves the database alone


def test_no_cache_and_cache_commands(tiny_model: str, photos: Path, isolated_caches: Path) -> None:
    args = [
        "predict",
        str(photos),
        "--labels",
        "cat,dog",
        "--model",
        tiny_model,
        "-q",
        "--templates",
        "photo",
        "-f",
        "jsonl",
    ]
    assert runner.invoke(app, [*args, "--no-cache"]).exit_code == 0
    assert not (isolated_caches / "embeddings.sqlite3").exists()
    first = runner.invoke(app, args)
    info = runner.invoke(app, ["cache", "info"])
    assert info.exit_code == 0 and "4 from 1 model setups" in info.stdout
    assert runner.invoke(app, args).stdout == first.stdout
    cleared = runner.invoke(app, ["cache", "clear"])
    assert cleared.exit_code == 0 and "removed the embedding cache" in cleared.stderr
    assert "0 from 0 model setups" in runner.invoke(app, ["cache", "info"]).stdout


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.mark.slow
def test_two_processes_share_the_cache(tiny_model: str, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    colour_images(folder, 40)
    env = {**os.environ, "CLIPCLS_CACHE_DIR": str(tmp_path / "shared")}

    def command(out: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "clipcls",
            "label",
            str(folder),
            "-o",
            str(out),
            "--labels",
            "red,green,blue",
            "--model",
            tiny_model,
            "--templates",
            "photo",
            "-q",
            "--batch-size",
            "4",
        ]

    runs = [
        subprocess.Popen(command(tmp_path / f"out{i}.csv"), env=env, stderr=subprocess.PIPE)
        for i in range(2)
    ]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read()  # type: ignore[union-attr]
    solo_env = {**env, "CLIPCLS_CACHE_DIR": str(tmp_path / "solo")}
    subprocess.run(command(tmp_path / "solo.csv"), env=solo_env, check=True, timeout=300)
    solo = read_rows(tmp_path / "solo.csv")
    for shared in ("out0.csv", "out1.csv"):
        rows = read_rows(tmp_path / shared)
        assert [r["path"] for r in rows] == [r["path"] for r in solo]
        assert [r["label"] for r in rows] == [r["label"] for r in solo]
        for a, b in zip(rows, solo, strict=True):
            assert float(a["probability"]) == pytest.approx(float(b["probability"]), abs=2e-6)
    cache = EmbeddingCache(tmp_path / "shared")
    assert cache.info().images == 40


def cached_run(model: str, folder: Path, *extra: str):  # type: ignore[no-untyped-def]
    return predict(model, str(folder), "-f", "jsonl", "-q", *extra)


DAMAGE = {
    "renamed column": "ALTER TABLE images RENAME COLUMN vector TO v",
    "wrong-size vector": "UPDATE images SET vector = x'0000803f'",  # [1.0]: unit, 1-d
    "odd-size vector": "UPDATE images SET vector = x'000000'",
    "dropped table": "DROP TABLE texts",
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_cache_warns_once_and_answers_right(
    tiny_model: str, photos: Path, isolated_caches: Path, damage: str
) -> None:
    want = cached_run(tiny_model, photos, "--no-cache").stdout
    assert cached_run(tiny_model, photos).stdout == want
    with sqlite3.connect(isolated_caches / "embeddings.sqlite3") as db:
        db.execute(DAMAGE[damage])
    result = predict(tiny_model, str(photos), "-f", "jsonl")
    assert result.exit_code == 0, result.output
    assert result.stdout == want
    assert result.stderr.count("embedding cache") == 1


def test_corrupt_or_foreign_cache_files_are_survived_and_cleared(
    tiny_model: str, photos: Path, isolated_caches: Path
) -> None:
    want = cached_run(tiny_model, photos, "--no-cache").stdout
    assert cached_run(tiny_model, photos).stdout == want
    database = isolated_caches / "embeddings.sqlite3"
    data = bytearray(database.read_bytes())
    data[4096:8192] = os.urandom(4096)  # corrupt pages
    database.write_bytes(bytes(data))
    assert cached_run(tiny_model, photos).stdout == want
    database.write_bytes(b"this is not a database" * 100)
    assert cached_run(tiny_model, photos).stdout == want
    cleared = runner.invoke(app, ["cache", "clear"])
    assert cleared.exit_code == 0 and not database.exists()
    assert cached_run(tiny_model, photos).stdout == want


@pytest.mark.slow
def test_a_cache_locked_by_another_process_is_skipped(
    tiny_model: str, photos: Path, isolated_caches: Path
) -> None:
    want = cached_run(tiny_model, photos, "--no-cache").stdout
    assert cached_run(tiny_model, photos).stdout == want
    (photos / "new.png").write_bytes((SAMPLE_IMAGES / "coffee.png").read_bytes())
    holder = sqlite3.connect(isolated_caches / "embeddings.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = predict(tiny_model, str(photos), "-f", "jsonl")
    finally:
        holder.rollback()
        holder.close()
    assert result.exit_code == 0 and len(jsonl(result.stdout)) == 5
    assert result.stderr.count("embedding cache") == 1


def test_an_old_schema_is_rebuilt(tiny_model: str, photos: Path, isolated_caches: Path) -> None:
    isolated_caches.mkdir(parents=True)
    with sqlite3.connect(isolated_caches / "embeddings.sqlite3") as db:
        db.execute("CREATE TABLE images (model TEXT, path BLOB, size INT, mtime INT, vector BLOB)")
    want = cached_run(tiny_model, photos, "--no-cache").stdout
    result = predict(tiny_model, str(photos), "-f", "jsonl")
    assert result.stdout == want and "embedding cache" not in result.stderr
    assert cached_run(tiny_model, photos).stdout == want


def test_content_changed_with_size_and_mtime_put_back_is_recomputed(
    tiny_model: str, tmp_path: Path
) -> None:
    image = tmp_path / "same.bmp"
    Image.new("RGB", (64, 64), (250, 10, 10)).save(image)
    first = cached_run(tiny_model, image).stdout
    stamp = image.stat()
    Image.new("RGB", (64, 64), (10, 10, 250)).save(image)
    os.utime(image, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert image.stat().st_size == stamp.st_size
    assert (
        cached_run(tiny_model, image).stdout == cached_run(tiny_model, image, "--no-cache").stdout
    )
    assert cached_run(tiny_model, image).stdout != first


def test_input_checks_apply_to_cached_images(tiny_model: str, photos: Path) -> None:
    assert cached_run(tiny_model, photos).exit_code == 0
    limited = cached_run(tiny_model, photos, "--max-megapixels", "0.01")
    rows = jsonl(limited.stdout)
    assert rows and all("too large" in row["error"] for row in rows)


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "lots"])
def test_bad_cache_size_is_one_clear_error(
    tiny_model: str, photos: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CLIPCLS_CACHE_MAX_GB", value)
    result = predict(tiny_model, str(photos))
    assert result.exit_code == 2 and "CLIPCLS_CACHE_MAX_GB" in result.stderr
    assert result.stderr.count("\n") == 1


runner = CliRunner()
PNG = (SAMPLE_IMAGES / "chelsea.png").read_bytes()


def predict(model: str, *args: str, labels: str = "cat,dog"):  # type: ignore[no-untyped-def]
    return runner.invoke(
        app, ["predict", *args, "--model", model, "--templates", "photo", "--labels", labels]
    )
