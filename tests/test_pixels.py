"""The torch-free preprocessing gives open_clip's eval transform bit for bit: the uint8 image its
PIL steps give (every resize mode and interpolation, square and non-square inputs, images
smaller than the crop, one pixel wide, extreme ratios), and ToTensor + Normalize's floats."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import torch
from conftest import SAMPLE_IMAGES, torch_free_stdout
from open_clip.transform import image_transform
from PIL import Image
from torchvision import transforms

from clipcls.engine.fastpaths import normalized_batch, split_preprocess, to_uint8
from clipcls.engine.pixels import Pixels
from clipcls.errors import ImageError, ModelLoadError

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
# (width, height): square, either side longer, odd and even differences from the targets,
# smaller than the crop on one side or both, one pixel, extreme ratios
SIZES = [(1, 1), (1, 9), (9, 1), (2, 3), (7, 7), (8, 13), (13, 8), (16, 16), (17, 16)]
SIZES += [(31, 24), (24, 31), (40, 9), (3, 70), (64, 48), (97, 131), (300, 11), (5, 600)]
TARGETS: list[Any] = [16, [16, 16], [12, 20], [21, 10], 15]
MODES = ["shortest", "longest", "squash"]
INTERPOLATIONS = ["bicubic", "bilinear"]


def images(seed: int) -> list[Image.Image]:
    """Noise (the hardest case for a resampling filter) and smooth gradients, every size."""
    rng = np.random.default_rng(seed)
    found = []
    for width, height in SIZES:
        found.append(Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)))
        ramp = np.linspace(0, 255, width * height).reshape(height, width)
        found.append(Image.fromarray(np.dstack([ramp, ramp[::-1], 255 - ramp]).astype(np.uint8)))
    return found


def config(size: Any, mode: str, interpolation: str, fill: int = 0) -> dict[str, Any]:
    return {
        "size": size,
        "mode": "RGB",
        "mean": MEAN,
        "std": STD,
        "interpolation": interpolation,
        "resize_mode": mode,
        "fill_color": fill,
    }


def torch_pil_stage(cfg: dict[str, Any]) -> Any:
    """open_clip's eval transform, split where the torch path splits it (ToTensor onwards)."""
    size = tuple(cfg["size"]) if isinstance(cfg["size"], list) else cfg["size"]
    transform = image_transform(
        size,
        is_train=False,
        mean=cfg["mean"],
        std=cfg["std"],
        resize_mode=cfg["resize_mode"],
        interpolation=cfg["interpolation"],
        fill_color=cfg["fill_color"],
    )
    fast = split_preprocess(transform)
    assert fast is not None
    return fast


def outcome(prepare: Any, image: Image.Image) -> Any:
    """The prepared array, or the kind of error (both paths must refuse the same images)."""
    try:
        return prepare(image)
    except ValueError as error:
        return type(error)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("mode", MODES)
def test_prepare_is_bit_equal_to_open_clips_pil_steps(mode: str, interpolation: str) -> None:
    for index, size in enumerate(TARGETS):
        fill = 0 if index % 2 else 77  # CenterCropOrPad's fill (longest) shows in the padding
        cfg = config(size, mode, interpolation, fill)
        fast, pixels = torch_pil_stage(cfg), Pixels(cfg)
        assert pixels.size == fast.size
        for number, image in enumerate(images(seed=index)):
            theirs = outcome(functools.partial(to_uint8, fast), image)
            ours = outcome(pixels.prepare, image)
            where = f"{cfg} image {number} {image.size}"
            if isinstance(theirs, np.ndarray):
                assert isinstance(ours, np.ndarray), where
                assert ours.dtype == np.uint8 and ours.flags.c_contiguous
                assert ours.shape == theirs.shape and np.array_equal(ours, theirs), where
            else:
                assert ours is theirs, where  # a side that would become 0 pixels


def test_real_photos_at_model_sizes() -> None:
    photos = [Image.open(p).convert("RGB") for p in sorted(SAMPLE_IMAGES.glob("*.jpg"))[:3]]
    assert photos
    for size, mode in [(224, "shortest"), (256, "longest"), ([224, 336], "shortest")]:
        cfg = config(size, mode, "bicubic")
        fast, pixels = torch_pil_stage(cfg), Pixels(cfg)
        for photo in photos:
            assert np.array_equal(pixels.prepare(photo), to_uint8(fast, photo))


@pytest.mark.parametrize("image_mode", ["L", "RGBA", "LA", "I;16"])
def test_other_image_modes_end_as_the_torch_path_ends_them(image_mode: str) -> None:
    rng = np.random.default_rng(5)
    rgba = Image.fromarray(rng.integers(0, 256, (23, 37, 4), dtype=np.uint8))
    image = rgba.convert(image_mode) if image_mode != "I;16" else rgba.convert("L").convert("I;16")
    for mode in MODES:
        cfg = config([16, 24], mode, "bilinear", fill=200)
        assert np.array_equal(Pixels(cfg).prepare(image), to_uint8(torch_pil_stage(cfg), image))


def test_normalize_is_totensor_then_normalize() -> None:
    cfg = config(16, "shortest", "bicubic")
    pixels = Pixels(cfg)
    batch = [pixels.prepare(image) for image in images(seed=9)]
    batch.append(np.arange(256 * 3, dtype=np.int64).reshape(16, 16, 3).astype(np.uint8))
    ours = pixels.normalize(batch)
    normalize = transforms.Normalize(MEAN, STD)
    theirs = torch.stack([normalize(transforms.ToTensor()(Image.fromarray(a))) for a in batch])
    assert ours.dtype == np.float32 and ours.shape == (len(batch), 3, 16, 16)
    assert np.abs(ours - theirs.numpy()).max() <= 1e-6
    fast = torch_pil_stage(cfg)
    clipcls_torch = normalized_batch(fast, batch, torch.device("cpu")).numpy()
    assert np.array_equal(ours, clipcls_torch)  # the torch runtime's own arithmetic, exactly
    assert pixels.normalize([]).shape == (0, 3, 16, 16)


def test_normalize_refuses_what_prepare_never_gives() -> None:
    pixels = Pixels(config(4, "squash", "bilinear"))
    with pytest.raises(ValueError, match="uint8"):
        pixels.normalize([np.zeros((4, 4, 3), dtype=np.float32)])
    with pytest.raises(ValueError, match="uint8"):
        pixels.normalize([np.zeros((4, 4), dtype=np.uint8)])
    with pytest.raises(ValueError, match="alike"):
        pixels.normalize([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)])


def test_a_model_config_as_open_clip_reports_it() -> None:
    """The dict open_clip.get_model_preprocess_cfg gives (what an export records) is accepted,
    its defaults filled as open_clip fills them."""
    pixels = Pixels({"size": (224, 224), "interpolation": None, "resize_mode": None})
    assert (pixels.height, pixels.width, pixels.size) == (224, 224, 224)
    assert pixels.resize_mode == "shortest" and pixels.mean.tolist() == list(np.float32(MEAN))
    assert Pixels({"size": [256, 384], "mean": 0.5, "std": [0.5]}).size == 384


@pytest.mark.parametrize(
    "bad",
    [
        {"size": "224"},
        {"size": [224, 224, 3]},
        {"size": 0},
        {"size": True},
        {"mode": "L"},
        {"mean": [0.5, 0.5]},
        {"std": [0.5, 0.0, 0.5]},
        {"std": ["x", 1, 1]},
        {"mean": [float("nan")] * 3},
        {"interpolation": "lanczos"},
        {"resize_mode": "[/b]=cmd()"},
        {"fill_color": 256},
        {"fill_color": 1.5},
    ],
)
def test_a_broken_config_is_one_model_load_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ModelLoadError):
        Pixels({**config(224, "shortest", "bicubic"), **bad})


def test_an_image_without_pixels_is_an_image_error() -> None:
    with pytest.raises(ImageError, match="0x5"):
        Pixels(config(8, "shortest", "bicubic")).prepare(Image.new("RGB", (0, 5)))


def test_preprocessing_loads_no_torch() -> None:
    code = (
        "from PIL import Image\nfrom clipcls.engine.pixels import Pixels\n"
        "p = Pixels({'size': 8})\nprint(p.normalize([p.prepare(Image.new('RGB', (9, 5)))]).shape)\n"
    )
    assert torch_free_stdout(code).strip() == "(1, 3, 8, 8)"
