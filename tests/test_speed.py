"""The fast paths change nothing that matters: preprocessing, text truncation, draft decoding,
thread plans, prefetching and the embedding cache."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLE_IMAGES, CountingEncoder, colour_images, fp32
from PIL import Image
from typer.testing import CliRunner

from clipcls import classify
from clipcls.classify import Classifier, encode_prompts
from clipcls.engine import fastpaths as towers
from clipcls.engine import model as model_module
from clipcls.engine.fastpaths import length_batches, normalized_batch
from clipcls.engine.hardware import plan_threads
from clipcls.images import load_image
from clipcls.pipeline import PREFETCH_BATCHES, prepare_path

runner = CliRunner()


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


def test_prompts_embedded_in_chunks_equal_one_call(
    tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = [f"a photo of {'a very ' * (i % 7)}thing number {i}." for i in range(40)]
    model = fp32(tiny_model)
    one_call = model.encode_texts(prompts)
    monkeypatch.setattr(classify, "TEXT_CHUNK", 8)  # 5 chunks, each its own tower batches
    np.testing.assert_allclose(encode_prompts(model, prompts), one_call, atol=1e-5)


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


def test_prefetch_keeps_order_and_bounds_memory(tmp_path: Path) -> None:
    paths = colour_images(tmp_path / "imgs", 60)
    sequential = list(Classifier(CountingEncoder(), ["r", "g"], ["{}"], 4).classify_paths(paths))
    encoder = CountingEncoder(overlap=True, workers=3)
    overlapped = list(Classifier(encoder, ["r", "g"], ["{}"], 4).classify_paths(paths))
    assert overlapped == sequential
    assert encoder.most_waiting <= (PREFETCH_BATCHES + 1) * 4


def test_same_prompt_is_encoded_once_per_classifier() -> None:
    encoder = CountingEncoder()
    Classifier(encoder, ["cat", "dog"], ["a photo of a {}.", "a photo of a {}.", "{}"])
    assert encoder.texts_encoded == 4
