"""open_clip's eval preprocessing without torch: PIL resizes, numpy crops, pads and normalizes.

prepare() gives the uint8 image the PIL half of open_clip's eval transform gives (torchvision's
Resize / CenterCrop, open_clip's ResizeKeepRatio / CenterCropOrPad, sizes and offsets as they
compute them); normalize() does ToTensor's then Normalize's float32 arithmetic on a batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from clipcls.errors import ImageError, ModelLoadError

# open_clip's PreprocessCfg defaults (OpenAI's mean and std)
DEFAULTS: dict[str, Any] = {
    "size": 224,
    "mode": "RGB",
    "mean": (0.48145466, 0.4578275, 0.40821073),
    "std": (0.26862954, 0.26130258, 0.27577711),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
    "fill_color": 0,
}
# open_clip reads "random" as bicubic outside training
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_RESAMPLE["random"] = Image.Resampling.BICUBIC
RESIZE_MODES = ("shortest", "longest", "squash")


def _pair(value: Any, name: str) -> tuple[int, int]:
    """(height, width) from an int or a [height, width] pair."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, list | tuple) and len(value) in (1, 2):
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return int(value[0]), int(value[-1])
    raise ModelLoadError(f"preprocess {name} must be an int or [height, width], not {value!r}")


def _channels(value: Any, name: str) -> np.ndarray:
    """Three float32 per-channel values (one number stands for all three, as in open_clip)."""
    values = list(value) if isinstance(value, list | tuple) else [value]
    try:
        with np.errstate(over="ignore"):  # a huge number becomes inf, refused just below
            array = np.asarray(values * 3 if len(values) == 1 else values, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        array = np.zeros(0, dtype=np.float32)
    if (
        array.shape != (3,)
        or not np.isfinite(array).all()
        or (name == "std" and (array == 0).any())
    ):
        raise ModelLoadError(f"preprocess {name} must be three finite numbers, not {value!r}")
    return array


def _span(have: int, want: int) -> tuple[int, int]:
    """Along one side: (where the kept pixels start in the image, where they land in the output).

    A side too short is padded, (want - have) // 2 before it, as torchvision and open_clip do; a
    long one is cropped round((have - want) / 2) from its start, Python's round, as theirs.
    """
    if want > have:
        return 0, (want - have) // 2
    return int(round((have - want) / 2.0)), 0


def _resize(image: Image.Image, height: int, width: int, resample: int) -> Image.Image:
    """torchvision's resize of a PIL image: left alone when it already has the size."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), resample)


class Pixels:
    """An open_clip preprocess config, applied to PIL images and uint8 batches in numpy."""

    def __init__(self, config: Mapping[str, Any]):
        settings = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
        self.height, self.width = _pair(settings["size"], "size")
        if min(self.height, self.width) < 1:
            raise ModelLoadError(f"preprocess size must be positive, not {settings['size']!r}")
        self.mode = str(settings["mode"])
        if self.mode != "RGB":  # open_clip's PreprocessCfg allows nothing else
            raise ModelLoadError(f"preprocess mode {self.mode!r} is not RGB")
        self.mean = _channels(settings["mean"], "mean")
        self.std = _channels(settings["std"], "std")
        if settings["interpolation"] not in _RESAMPLE:
            raise ModelLoadError(f"unknown interpolation {settings['interpolation']!r}")
        self.resample = _RESAMPLE[settings["interpolation"]]
        self.resize_mode = settings["resize_mode"]
        if self.resize_mode not in RESIZE_MODES:
            raise ModelLoadError(f"unknown resize_mode {self.resize_mode!r}: one of {RESIZE_MODES}")
        fill = settings["fill_color"]
        if not isinstance(fill, int) or isinstance(fill, bool) or not 0 <= fill <= 255:
            raise ModelLoadError(f"preprocess fill_color must be 0..255, not {fill!r}")
        self.fill_color = fill
        # ToTensor then Normalize, per channel, for each of the 256 byte values: the same
        # float32 operations, so a table lookup gives the very same numbers.
        scaled = np.arange(256, dtype=np.float32) / np.float32(255)
        self._table = (scaled[None, :] - self.mean[:, None]) / self.std[:, None]  # (3, 256)

    @property
    def size(self) -> int:
        """The longer side of the model input: how small a draft JPEG decode may go."""
        return max(self.height, self.width)

    def prepare(self, image: Image.Image) -> np.ndarray:
        """Resize and crop (or pad) one image as open_clip's eval transform: (H, W, 3) uint8."""
        if min(image.size) < 1:  # torchvision would divide by zero
            raise ImageError(f"the image has no pixels ({image.width}x{image.height})")
        fill = 0
        if self.resize_mode == "squash":
            image = _resize(image, self.height, self.width, self.resample)
        elif self.resize_mode == "longest":
            image = self._keep_ratio(image, longest=True, resample=self.resample)
            fill = self.fill_color
        elif self.height == self.width:
            image = self._shorter_side(image)
        else:
            # open_clip builds this ResizeKeepRatio without its interpolation: always bicubic
            image = self._keep_ratio(image, longest=False, resample=Image.Resampling.BICUBIC)
        # Cropping and padding commute with the per-pixel mode conversion: convert, then cut.
        if image.mode != self.mode:
            image = image.convert(self.mode)
        pixels = np.asarray(image, dtype=np.uint8)
        return self._crop_or_pad(pixels, fill)

    def normalize(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 (H, W, 3) images -> float32 (n, 3, H, W): (x / 255 - mean) / std, as torchvision
        computes it (a lookup in the table of those numbers, image by image: no stacked copy)."""
        shape = batch[0].shape if len(batch) else (self.height, self.width, 3)
        out = np.empty((len(batch), 3, *shape[:2]), dtype=np.float32)
        for row, image in enumerate(batch):
            if image.dtype != np.uint8 or image.shape != shape or len(shape) != 3 or shape[2] != 3:
                raise ValueError(f"normalize takes (H, W, 3) uint8 arrays alike, not {image.shape}")
            channels = image.transpose(2, 0, 1)
            for channel in range(3):
                np.take(self._table[channel], channels[channel], out=out[row, channel])
        return out

    def _shorter_side(self, image: Image.Image) -> Image.Image:
        """torchvision's Resize(int): the shorter side to the size, the longer one in ratio,
        truncated (int(size * long / short))."""
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.height * long / short)
        if width <= height:
            return _resize(image, new_long, self.height, self.resample)
        return _resize(image, self.height, new_long, self.resample)

    def _keep_ratio(self, image: Image.Image, longest: bool, resample: int) -> Image.Image:
        """open_clip's ResizeKeepRatio: scale both sides by one ratio, the longer side's fit
        (longest) or the shorter side's (shortest), each side rounded half to even."""
        width, height = image.size
        ratios = (height / self.height, width / self.width)
        ratio = max(ratios) if longest else min(ratios)
        return _resize(image, round(height / ratio), round(width / ratio), resample)

    def _crop_or_pad(self, pixels: np.ndarray, fill: int) -> np.ndarray:
        """Center-crop to (height, width), padding a short side with fill first."""
        (top, down), (left, across) = (
            _span(pixels.shape[0], self.height),
            _span(pixels.shape[1], self.width),
        )
        kept = pixels[top : top + self.height, left : left + self.width]
        if kept.shape[:2] == (self.height, self.width):
            return np.ascontiguousarray(kept)
        out = np.full((self.height, self.width, 3), fill, dtype=np.uint8)
        out[down : down + kept.shape[0], across : across + kept.shape[1]] = kept
        return out
