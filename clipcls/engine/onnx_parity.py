"""The parity gate of an ONNX export: both towers, run in ONNX Runtime, against the torch model
on random and real inputs (sample photos through the model's own preprocessing, prompt
templates x labels cut as the runtime cuts them). An export that differs by more than
TOLERANCE is refused (rclip's exporter asks the same)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipcls.errors import UsageError

TOLERANCE = 1e-4  # max |diff| of fp32 embeddings, normalized, and raw relative to their scale


def _sample_images() -> Path:
    """The sample photos: installed with the package, else a source checkout's."""
    from importlib import resources

    installed = Path(str(resources.files("clipcls"))) / "sample_images"
    return (
        installed if installed.is_dir() else Path(__file__).resolve().parents[2] / "sample_images"
    )


SAMPLE_IMAGES = _sample_images()
PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png")
TEMPLATE_SET, TEMPLATES = "openai", 6
LABELS = ("cat", "golden retriever", "a red sports car parked on a mountain road at dusk")
LONG_PROMPT = " ".join(["a photo of a very long and winding description"] * 12)  # > 77 tokens
RANDOM_LENGTHS = (2, 3, 9, 30)  # plus context_length: real lengths of random token rows
SEED = 0


@dataclass(frozen=True)
class Parity:
    """The largest |ONNX - torch| over the gate's inputs: raw features, and L2-normalized."""

    image_max_abs: float
    image_unit_max_abs: float
    text_max_abs: float
    text_unit_max_abs: float
    inputs: str  # what was compared, in words


class Gap:
    """The running maximum |ONNX - torch| of one tower, raw and normalized."""

    def __init__(self) -> None:
        self.raw = 0.0
        self.unit = 0.0
        self.scale = 1.0  # the largest |feature| seen, at least 1

    def add(self, torch_rows: np.ndarray, onnx_rows: np.ndarray) -> None:
        if torch_rows.shape != onnx_rows.shape:
            raise UsageError(
                f"the ONNX export answers shape {onnx_rows.shape}, torch {torch_rows.shape}"
            )
        self.raw = max(self.raw, float(np.abs(torch_rows - onnx_rows).max()))
        self.unit = max(self.unit, float(np.abs(_unit(torch_rows) - _unit(onnx_rows)).max()))
        self.scale = max(self.scale, float(np.abs(torch_rows).max()))

    def passes(self) -> bool:
        # Raw features may be large (norms of 10 and more): their bound scales with them.
        return self.unit <= TOLERANCE and self.raw <= TOLERANCE * self.scale


def _unit(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows / np.linalg.norm(rows, axis=1, keepdims=True), dtype=np.float32)


def check_parity(
    model: Any, preprocess: Any, tokenizer: Any, folder: Path, text: dict[str, Any]
) -> Parity:
    """Compare the exported towers in folder with the torch model; a Parity, or UsageError."""
    from clipcls.engine.onnx_towers import IMAGE_FILE, TEXT_FILE

    image_session, text_session = _session(folder / IMAGE_FILE), _session(folder / TEXT_FILE)
    images, image_words = Gap(), []
    for batch, words in _image_batches(model, preprocess):
        image_words.append(words)
        images.add(_torch(model.encode_image, batch), image_session.run(None, {"pixels": batch})[0])
    texts, text_words = Gap(), []
    for tokens, words in _token_batches(model, tokenizer, text):
        text_words.append(words)
        cut = tokens[:, : _cut_length(tokens, text)]
        texts.add(_torch(model.encode_text, tokens), text_session.run(None, {"tokens": cut})[0])
    parity = Parity(
        images.raw,
        images.unit,
        texts.raw,
        texts.unit,
        f"images: {_joined(image_words)}; texts: {_joined(text_words)}",
    )
    for tower, gap in (("image", images), ("text", texts)):
        if not gap.passes():
            raise UsageError(
                f"the ONNX {tower} tower does not match torch: max |diff| {gap.raw:.2e} "
                f"({gap.unit:.2e} normalized), over the {TOLERANCE:.0e} bound; nothing written"
            )
    return parity


def _joined(words: list[str]) -> str:
    return ", ".join(word for word in words if word)


def _session(path: Path) -> Any:
    onnxruntime = importlib.import_module("onnxruntime")  # untyped; check_exportable found it
    try:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own exception types
        first = (str(error).strip().splitlines() or [""])[0][:300]
        raise UsageError(f"ONNX Runtime cannot load the exported {path.name}: {first}") from None


def _torch(encode: Any, batch: np.ndarray) -> np.ndarray:
    """The torch tower on a numpy batch: raw features as float32."""
    import torch

    with torch.inference_mode():
        return np.asarray(encode(torch.from_numpy(batch)).float().numpy(), dtype=np.float32)


def _image_batches(model: Any, preprocess: Any) -> Iterator[tuple[np.ndarray, str]]:
    """Random pixels (one and two images), then the sample photos through the model's own
    preprocessing (synthetic pictures where the photos are not installed)."""
    import open_clip

    size = open_clip.get_model_preprocess_cfg(model)["size"]
    height, width = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(SEED)
    for count in (1, 2):  # two batch sizes: the batch axis is dynamic
        words = f"3 random at {height}x{width}" if count == 1 else ""
        yield rng.standard_normal((count, 3, height, width)).astype(np.float32), words
    paths = [SAMPLE_IMAGES / name for name in PHOTOS if (SAMPLE_IMAGES / name).is_file()]
    if paths:
        pictures = [_rgb(path) for path in paths]
        words = f"{len(paths)} photos"
    else:
        pictures = [_synthetic(rng, i) for i in range(len(PHOTOS))]
        words = f"{len(pictures)} synthetic pictures"
    batch = np.stack([np.asarray(preprocess(p), dtype=np.float32) for p in pictures])
    yield batch, f"{words} through the model's preprocessing"


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        rgb: Image.Image = image.convert("RGB")
    return rgb


def _synthetic(rng: np.random.Generator, index: int) -> Image.Image:
    """A picture with edges and gradients, of an odd size, so resizing and cropping do work."""
    height, width = 180 + 37 * index, 260 - 23 * index
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    noise = rng.integers(0, 64, (height, width, 3))
    return Image.fromarray(np.clip(ramp + noise, 0, 255).astype(np.uint8))


def _token_batches(
    model: Any, tokenizer: Any, text: dict[str, Any]
) -> Iterator[tuple[np.ndarray, str]]:
    """Random token rows ending at several lengths, then real prompts, each padded to
    context_length as the tokenizer pads: the torch tower reads them whole, ONNX cut."""
    from clipcls.prompts import load_templates

    context_length = int(text["context_length"])
    rng = np.random.default_rng(SEED)
    lengths = [n for n in RANDOM_LENGTHS if n < context_length and text["cut"]]
    lengths.append(context_length)
    vocab = int(_vocab(model))
    for length in lengths:
        words = f"{3 * len(lengths)} random" + (f" (cut at {lengths})" if text["cut"] else "")
        yield _random_tokens(rng, length, vocab, text), words if length == lengths[0] else ""
    templates = load_templates(TEMPLATE_SET).templates[:TEMPLATES]
    prompts = [t.replace("{}", label) for t in templates for label in LABELS]
    tokens = np.asarray(tokenizer([*prompts, LONG_PROMPT]).numpy(), dtype=np.int64)
    words = f"{len(prompts) + 1} prompts ({TEMPLATE_SET} x {len(LABELS)} labels + one too long)"
    yield tokens, words


def _vocab(model: Any) -> int:
    text = getattr(model, "text", None)
    embedding = (text if text is not None else model).token_embedding
    return int(embedding.num_embeddings)


def _random_tokens(
    rng: np.random.Generator, length: int, vocab: int, text: dict[str, Any]
) -> np.ndarray:
    """Three rows whose real lengths end at or before length (the longest exactly there),
    zero-padded to context_length; the end-of-text token where the tower pools."""
    context_length = int(text["context_length"])
    if not text["cut"]:  # the tower reads every position: any ids anywhere
        return rng.integers(0, vocab, (3, context_length)).astype(np.int64)
    end = vocab - 1 if text["pool"] == "argmax" else int(text["eos_id"])
    rows = np.zeros((3, context_length), dtype=np.int64)
    for row, real in enumerate((length, max(2, length // 2), 2)):
        rows[row, : real - 1] = rng.integers(1, end, real - 1)  # below the end id: argmax finds it
        rows[row, real - 1] = end
    return rows


def _cut_length(tokens: np.ndarray, text: dict[str, Any]) -> int:
    """The length the runtime runs a batch at: up to its longest prompt's end-of-text token,
    or context_length for a tower that reads every position."""
    if not text["cut"]:
        return int(tokens.shape[1])
    if text["pool"] == "argmax":
        ends = tokens.argmax(axis=1)
    else:
        ends = (tokens == int(text["eos_id"])).argmax(axis=1)
    return int(ends.max()) + 1
