"""The fast paths change nothing that matters: preprocessing, text truncation, draft decoding,
thread plans, prefetching and the embedding cache."""

import csv
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLE_IMAGES
from PIL import Image
from test_classify import FakeEncoder
from typer.testing import CliRunner

from clipcls.cache import EmbeddingCache, FileKey
from clipcls.classify import Classifier
from clipcls.cli import app
from clipcls.engine import fastpaths as towers
from clipcls.engine import model as model_module
from clipcls.engine.fastpaths import length_batches, normalized_batch
from clipcls.engine.hardware import plan_threads
from clipcls.engine.model import ClipModel
from clipcls.images import load_image
from clipcls.pipeline import PREFETCH_BATCHES, EmbedPlan, prepare_path
from clipcls.settings import ModelSettings, Precision

runner = CliRunner()


def fp32(model: str, **kwargs: object) -> ClipModel:
    return ClipModel(ModelSettings(model=model, precision=Precision.FP32, **kwargs))  # type: ignore[arg-type]


def test_fast_preprocessing_is_bit_identical_to_open_clips(tiny_model: str) -> None:
    model = fp32(tiny_model, exact_decode=True)
    names = ["chelsea.png", "camera.png", "rocket.jpg", "coins.png", "retina.jpg"]
    images = [load_image(SAMPLE_IMAGES / name) for name in names]
    fast = normalized_batch(model._fast, [model.prepare(i) for i in images], torch.device("cpu"))
    reference = torch.stack([model._preprocess(i) for i in images])
    assert torch.equal(fast, reference)


@pytest.mark.parametrize("fused", [True, False])
def test_truncated_text_equals_the_padded_tower(
    tiny_model: str, tiny_biased_model: str, fused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not fused:  # the path for blocks other than open_clip's plain one
        monkeypatch.setattr(towers, "_plain_blocks", lambda transformer: False)
    prompts = [
        "a",
        "a photo of a cat.",
        "itap of a {}.",
        "a tattoo of the " + "very " * 30 + "dog.",
        "x " * 70,
        "ünïcödé 猫 prompt",
        "",
    ]
    for name in (tiny_model, tiny_biased_model):
        model = fp32(name)
        assert model._truncate_text
        assert towers._plain_blocks(model._model.transformer) == fused
        short, padded = model.encode_texts(prompts), model.encode_texts(prompts, truncate=False)
        cosine = (short * padded).sum(axis=1)
        assert cosine.min() > 1 - 1e-4
        np.testing.assert_allclose(short, padded, atol=1e-5)


def test_length_batches_cover_every_row_once_within_the_budget() -> None:
    lengths = [5, 77, 9, 9, 3, 14, 6, 77, 11, 2]
    batches = length_batches(lengths, 40)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 40
    assert [lengths[b[0]] for b in batches] == sorted(lengths[b[0]] for b in batches)


def test_text_batches_come_back_in_input_order(
    tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_module, "TEXT_TOKENS", 48)  # many small batches
    prompts = [f"a photo of {'a very ' * (i % 7)}thing number {i}." for i in range(40)]
    model = fp32(tiny_model)
    together = model.encode_texts(prompts)
    alone = np.concatenate([model.encode_texts([p]) for p in prompts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def make_jpeg(path: Path, size: tuple[int, int]) -> Path:
    source = Image.open(SAMPLE_IMAGES / "chelsea.png").convert("RGB").resize(size, Image.BICUBIC)
    source.save(path, quality=90)
    return path


def test_draft_decoding_shrinks_large_jpegs_and_keeps_embeddings(
    tiny_model: str, tmp_path: Path
) -> None:
    big = make_jpeg(tmp_path / "big.jpg", (1600, 1200))
    assert load_image(big).size == (1600, 1200)
    drafted = load_image(big, draft_size=64)
    assert drafted.size == (200, 150)  # libjpeg's 1/8 scale still covers 64 x 64
    png = tmp_path / "big.png"
    Image.open(big).save(png)
    assert load_image(png, draft_size=64).size == (1600, 1200)  # only JPEGs have a draft mode
    fast, exact = fp32(tiny_model), fp32(tiny_model, exact_decode=True)
    assert fast.plan.draft_size == 32 and exact.plan.draft_size is None
    paths = [big, make_jpeg(tmp_path / "wide.jpg", (2400, 800)), SAMPLE_IMAGES / "rocket.jpg"]
    a = fast.encode_prepared([prepare_path(fast, p).tensor for p in paths])
    b = exact.encode_prepared([prepare_path(exact, p).tensor for p in paths])
    assert (a * b).sum(axis=1).min() >= 0.995


def test_thread_plans_never_put_more_threads_than_cores_to_work() -> None:
    cpu = plan_threads("cpu", cores=2)
    assert (cpu.torch_threads, cpu.decode_workers) == (2, 2)  # they take turns
    assert plan_threads("cpu", workers=0, cores=8).decode_workers == 0
    gpu = plan_threads("cuda", cores=16)
    assert (gpu.torch_threads, gpu.decode_workers) == (1, 15)  # + the thread feeding the GPU


class CountingEncoder(FakeEncoder):
    """Counts image and text work, and how many decoded images wait for the model at once."""

    def __init__(self, overlap: bool = False, workers: int = 0) -> None:
        super().__init__()
        self.plan = EmbedPlan(
            image_cache_key="fake-images",
            text_cache_key="fake-texts",
            overlap_decode=overlap,
            decode_workers=workers,
        )
        self.images_encoded = 0
        self.texts_encoded = 0
        self.waiting = 0
        self.most_waiting = 0
        self.lock = threading.Lock()

    def prepare(self, image: Image.Image) -> np.ndarray:
        with self.lock:
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
        return super().prepare(image)

    def encode_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        time.sleep(0.005)  # a slow device, so decoding runs ahead
        with self.lock:
            self.waiting -= len(prepared)
        self.images_encoded += len(prepared)
        return super().encode_prepared(prepared)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.texts_encoded += len(texts)
        return super().encode_texts(texts)


def colour_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:03d}.png"
        Image.new("RGB", (8, 8), (i * 7 % 256, i * 13 % 256, i * 29 % 256)).save(path)
        paths.append(path)
    return paths


def test_prefetch_keeps_order_and_bounds_memory(tmp_path: Path) -> None:
    paths = colour_images(tmp_path / "imgs", 60)
    sequential = list(Classifier(CountingEncoder(), ["r", "g"], ["{}"], 4).classify_paths(paths))
    encoder = CountingEncoder(overlap=True, workers=3)
    overlapped = list(Classifier(encoder, ["r", "g"], ["{}"], 4).classify_paths(paths))
    assert overlapped == sequential
    assert encoder.most_waiting <= (PREFETCH_BATCHES + 1) * 4


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


def test_same_prompt_is_encoded_once_per_classifier() -> None:
    encoder = CountingEncoder()
    Classifier(encoder, ["cat", "dog"], ["a photo of a {}.", "a photo of a {}.", "{}"])
    assert encoder.texts_encoded == 4


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
