"""The real open_clip path on tiny random-weight models: parity with open_clip, loading, export."""

from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from conftest import SAMPLE_IMAGES, TINY_MODEL_CFG, write_tiny_model
from PIL import Image

from clipcls.classify import Classifier, default_batch_size
from clipcls.engine.hardware import pick_device, pick_precision
from clipcls.engine.model import ClipModel
from clipcls.engine.sources import resolve_source
from clipcls.errors import ClipclsError, ModelLoadError, UsageError
from clipcls.images import load_image
from clipcls.prompts import load_templates
from clipcls.settings import DEFAULT_PRETRAINED, Device, ModelSettings, Precision

LABELS = ["cat", "coffee", "rocket", "astronaut", "coins"]
IMAGES = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "camera.png"]


def open_clip_reference(
    model_name: str, images: list[Path], labels: list[str], templates: list[str]
):
    """What a user of open_clip's README and zero_shot_classifier would compute."""
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    model, _, preprocess = open_clip.create_model_and_transforms(model_name)
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    with torch.no_grad():
        classifier = build_zero_shot_classifier(
            model, tokenizer, labels, templates, num_classes_per_batch=2
        )
        batch = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in images])
        features = model.encode_image(batch, normalize=True)
        similarities = features @ classifier
        logits = model.logit_scale.exp() * similarities
        if model.logit_bias is not None:
            logits = logits + model.logit_bias
        probabilities = logits.softmax(dim=-1)
    return probabilities.numpy(), similarities.numpy()


@pytest.mark.parametrize("model_fixture", ["tiny_model", "tiny_biased_model"])
def test_predictions_equal_open_clips_zero_shot_pipeline(model_fixture: str, request) -> None:
    model_name = request.getfixturevalue(model_fixture)
    templates = load_templates("openai")
    paths = [SAMPLE_IMAGES / name for name in IMAGES]
    want_p, want_s = open_clip_reference(model_name, paths, LABELS, list(templates.templates))
    exact = ModelSettings(model=model_name, precision=Precision.FP32, exact_decode=True)
    classifier = Classifier.load(LABELS, templates, exact, batch_size=2)
    predictions = list(classifier.classify_paths(paths))
    for row, prediction in enumerate(predictions):
        assert prediction.error is None
        got = {s.label: s for s in prediction.scores}
        for column, label in enumerate(LABELS):
            assert got[label].probability == pytest.approx(want_p[row, column], abs=1e-5)
            assert got[label].similarity == pytest.approx(want_s[row, column], abs=1e-5)


def test_logit_bias_and_quick_gelu_come_from_the_model(tiny_biased_model: str) -> None:
    loaded = ClipModel(ModelSettings(model=tiny_biased_model))
    assert loaded.logit_bias == pytest.approx(-2.5)
    assert loaded.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)
    activation = loaded._model.visual.transformer.resblocks[0].mlp.gelu
    assert type(activation).__name__ == "QuickGELU"


def test_in_memory_images_match_files(tiny_model: str) -> None:
    classifier = Classifier.load(
        ["cat", "rocket"], "photo", ModelSettings(model=tiny_model, exact_decode=True)
    )
    path = SAMPLE_IMAGES / "chelsea.png"
    (from_file,) = classifier.classify_paths([path])
    (in_memory,) = classifier.classify_images([load_image(path)])
    assert [s.probability for s in from_file.scores] == pytest.approx(
        [s.probability for s in in_memory.scores], abs=1e-6
    )


def test_quick_gelu_tags_build_quick_gelu_models_without_downloading() -> None:
    # ARCH:TAG names the weights, as `clipcls models` and the label CSV write them.
    openai = resolve_source(ModelSettings(model="ViT-B-32:openai"))
    assert (openai.name, openai.pretrained, openai.quick_gelu) == ("ViT-B-32", "openai", True)
    assert resolve_source(ModelSettings(model="ViT-B-32:laion400m_e32")).quick_gelu is True
    assert resolve_source(ModelSettings(pretrained="metaclip_400m")).quick_gelu is True
    default = resolve_source(ModelSettings())
    assert (default.name, default.pretrained, default.quick_gelu) == (
        "ViT-B-32",
        DEFAULT_PRETRAINED,
        False,
    )


@pytest.mark.slow
def test_quick_gelu_tag_really_builds_quick_gelu(tmp_path: Path, monkeypatch) -> None:
    """Load the openai tag from a local file standing in for the download: QuickGELU is built."""
    import open_clip.factory

    arch_model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
    checkpoint = tmp_path / "openai.pt"
    torch.save(arch_model.state_dict(), checkpoint)
    monkeypatch.setattr(
        open_clip.factory, "download_pretrained", lambda cfg, cache_dir=None: str(checkpoint)
    )
    loaded = ClipModel(ModelSettings(model="ViT-B-32:openai"))
    activation = loaded._model.visual.transformer.resblocks[0].mlp.gelu
    assert type(activation).__name__ == "QuickGELU"


def test_unknown_model_and_tag_are_explained() -> None:
    with pytest.raises(UsageError, match="unknown model 'ViT-B-33'; did you mean ViT-B-32"):
        resolve_source(ModelSettings(model="ViT-B-33"))
    with pytest.raises(UsageError, match="ViT-B-32 has no pretrained tag or file 'nope'"):
        resolve_source(ModelSettings(pretrained="nope"))
    with pytest.raises(UsageError, match="did you mean laion2b_"):
        resolve_source(ModelSettings(model="ViT-B-32:laion2b"))
    with pytest.raises(UsageError, match="--pretrained cannot be used with local-dir:"):
        resolve_source(ModelSettings(model="local-dir:/x", pretrained="ViT-B-32.pt"))
    with pytest.raises(UsageError, match="already names weights; drop --pretrained"):
        resolve_source(ModelSettings(model="ViT-B-32:openai", pretrained="x.pt"))


def test_missing_weights_offline_is_one_readable_error(isolated_caches: Path) -> None:
    with pytest.raises(ModelLoadError) as caught:
        ClipModel(ModelSettings(offline=True))
    message = str(caught.value)
    assert "ViT-B-32 (datacomp_xl_s13b_b90k)" in message
    assert str(isolated_caches) in message and "--offline is set" in message
    assert "local-dir:PATH" in message and "--pretrained FILE" in message
    assert "clipcls models export ViT-B-32 ./random --random --tiny" in message  # no network
    assert "\n" not in message


def test_missing_weights_without_network_is_one_readable_error() -> None:
    # conftest sets HF_HUB_OFFLINE, which is what no network looks like to the hub client.
    with pytest.raises(ModelLoadError, match="not in the cache at .*connect to the network once"):
        ClipModel(ModelSettings())


def test_local_dir_problems_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot load local-dir:.*missing.*not found"):
        ClipModel(ModelSettings(model=f"local-dir:{tmp_path / 'missing'}"))
    no_weights = write_tiny_model(tmp_path / "no_weights")
    (no_weights / "open_clip_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="cannot load local-dir:.*no_weights"):
        ClipModel(ModelSettings(model=f"local-dir:{no_weights}"))


def test_pretrained_file_loads_with_a_preprocessing_notice(tmp_path: Path) -> None:
    open_clip.factory._MODEL_CONFIGS["clipcls-test-tiny"] = dict(TINY_MODEL_CFG)
    try:
        torch.manual_seed(3)
        model = open_clip.create_model("clipcls-test-tiny")
        checkpoint = tmp_path / "tiny.pt"
        torch.save(model.state_dict(), checkpoint)
        settings = ModelSettings(
            model="clipcls-test-tiny", pretrained=str(checkpoint), precision=Precision.FP32
        )
        loaded = ClipModel(settings)
        assert loaded.info.pretrained == str(checkpoint)
        assert any("preprocessing falls back" in n for n in loaded.info.notices)
        got = loaded.encode_texts(["a photo of a cat."])
        want = (
            model.encode_text(
                open_clip.get_tokenizer("clipcls-test-tiny")(["a photo of a cat."]), normalize=True
            )
            .detach()
            .numpy()
        )
        np.testing.assert_allclose(got, want, atol=1e-6)
    finally:
        del open_clip.factory._MODEL_CONFIGS["clipcls-test-tiny"]


def test_export_writes_a_local_dir_that_loads_offline(
    tiny_biased_model: str, tmp_path: Path
) -> None:
    original = ClipModel(ModelSettings(model=tiny_biased_model))
    folder = tmp_path / "exported"
    original.export(folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "open_clip_config.json",
        "open_clip_model.safetensors",
    ]
    again = ClipModel(ModelSettings(model=f"local-dir:{folder}", offline=True))
    texts = ["a photo of a cat.", "a diagram"]
    np.testing.assert_allclose(again.encode_texts(texts), original.encode_texts(texts), atol=1e-6)
    image = again.prepare(load_image(SAMPLE_IMAGES / "rocket.jpg"))
    np.testing.assert_allclose(
        again.encode_prepared([image]), original.encode_prepared([image]), atol=1e-6
    )
    assert again.logit_bias == pytest.approx(original.logit_bias)


def test_device_and_precision_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pick_device(Device.CPU) == "cpu"
    if not torch.cuda.is_available():
        assert pick_device(Device.AUTO) in ("cpu", "mps")
        with pytest.raises(
            UsageError, match="--device cuda: (no GPU is visible|this torch is a CPU-only build)"
        ):
            pick_device(Device.CUDA)
    assert pick_precision(Precision.AUTO, "cuda") == "fp16"
    monkeypatch.setattr("clipcls.engine.hardware.cpu_has_fast_bf16", lambda: False)
    assert pick_precision(Precision.AUTO, "cpu") == "fp32"
    monkeypatch.setattr("clipcls.engine.hardware.cpu_has_fast_bf16", lambda: True)
    assert pick_precision(Precision.AUTO, "cpu") == "bf16"
    assert pick_precision(Precision.AUTO, "mps") == "fp32"
    assert pick_precision(Precision.BF16, "cpu") == "bf16"
    with pytest.raises(UsageError, match="fp16 is not supported on the CPU"):
        pick_precision(Precision.FP16, "cpu")


def test_bf16_on_cpu_stays_close_to_fp32(tiny_model: str) -> None:
    fp32 = ClipModel(ModelSettings(model=tiny_model, precision=Precision.FP32))
    bf16 = ClipModel(ModelSettings(model=tiny_model, precision=Precision.BF16))
    image = fp32.prepare(load_image(SAMPLE_IMAGES / "coffee.png"))
    cosine = float((fp32.encode_prepared([image]) * bf16.encode_prepared([image])).sum())
    assert cosine > 0.98
    assert bf16.info.precision == "bf16"


def test_default_batch_size_is_small_on_the_cpu_and_large_on_a_gpu(tiny_model: str) -> None:
    model = ClipModel(ModelSettings(model=tiny_model))
    assert Classifier(model, ["cat", "dog"], ["{}"]).batch_size == 32
    assert Classifier(model, ["cat", "dog"], ["{}"], batch_size=5).batch_size == 5
    assert default_batch_size("cpu") == 32
    assert default_batch_size("cuda") == default_batch_size("cuda:1") == 128
    assert default_batch_size("mps") == 128


def test_out_of_memory_becomes_one_clear_error(
    tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ClipModel(ModelSettings(model=tiny_model))
    image = model.prepare(load_image(SAMPLE_IMAGES / "chelsea.png"))

    def fail(message: str, kind: type[Exception]):  # type: ignore[no-untyped-def]
        def encode_image(batch):  # type: ignore[no-untyped-def]
            raise kind(message)

        monkeypatch.setattr(model._model, "encode_image", encode_image)

    fail("CUDA out of memory. Tried to allocate 2.00 GiB", torch.OutOfMemoryError)
    with pytest.raises(ClipclsError, match=r"^out of cpu memory embedding a batch of 3 images"):
        model.encode_prepared([image] * 3)
    fail(
        "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory",
        RuntimeError,
    )
    with pytest.raises(ClipclsError, match="pass a smaller --batch-size"):
        model.encode_prepared([image])
    fail("some other kernel failure", RuntimeError)
    with pytest.raises(RuntimeError, match="some other kernel failure"):
        model.encode_prepared([image])


def test_a_named_model_id_agrees_with_resolving_it(tiny_model: str) -> None:
    from clipcls.engine.sources import named_model_id

    for settings in (
        ModelSettings(model=tiny_model),
        ModelSettings(model="ViT-B-32:openai"),
        ModelSettings(model="ViT-B/32:laion2b_s34b_b79k"),
        ModelSettings(model="hf-hub:org/repo"),
    ):
        named = named_model_id(settings)
        if not settings.model.startswith("hf-hub:"):
            source = resolve_source(settings)
            assert named == (source.name, source.pretrained)
        assert named is not None
    assert named_model_id(ModelSettings(model="ViT-B-32")) is None  # open_clip picks the tag
