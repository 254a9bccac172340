"""The torch side of an ONNX export: which open_clip families can be exported, each tower as a
module torch.onnx can trace with dynamic axes, the tokenizer's files and the source digest."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Imported only by onnx_export, which only `models export --onnx` and `models prepare` import:
# the towers below are torch modules, so torch comes in with the module.
import torch  # noqa: TID253

from clipcls.errors import UsageError

OPSET = 18
IMAGE_FILE, TEXT_FILE = "image.onnx", "text.onnx"
BPE_FILE, HF_FILE = "bpe_simple_vocab_16e6.txt.gz", "tokenizer.json"
CLIP_VOCAB = 49408  # open_clip's BPE vocabulary with its two special tokens
ANSI_COLOR = re.compile(r"\x1b\[[0-9;]*m")
MAX_BATCH = 65536  # the dynamic batch axis's upper bound, far above any batch clipcls runs


def family(model: Any) -> str:
    """The open_clip family of a model, as its errors name it: the class, and its text tower's."""
    text = getattr(model, "text", None)
    return type(model).__name__ + (f" with {type(text).__name__}" if text is not None else "")


def check_family(model: Any) -> None:
    """Refuse what the exporter cannot handle: anything but CLIP and CustomTextCLIP with
    open_clip's own text transformer (CoCa's decoder, Hugging Face text towers)."""
    import open_clip
    from open_clip.transformer import TextTransformer

    if type(model) is open_clip.CLIP:
        return
    if type(model) is open_clip.CustomTextCLIP and type(model.text) is TextTransformer:
        return
    reasons = {
        "HFTextEncoder": "its text tower is a Hugging Face transformers model",
        "CoCa": "CoCa's captioning decoder and its pooled text tower are not exported",
    }
    text = type(getattr(model, "text", None)).__name__
    why = reasons.get(text) or reasons.get(type(model).__name__)
    why = why or "only CLIP and CustomTextCLIP with open_clip's TextTransformer are exported"
    raise UsageError(f"cannot export {family(model)} to ONNX: {why}")


def text_pool(model: Any) -> tuple[str, int | None]:
    """(pool type, end-of-text id) of the text tower, where the runtime may cut."""
    text = getattr(model, "text", None)
    if text is not None:
        return str(text.pool_type), getattr(text, "eos_id", None)
    return str(model.text_pool_type), getattr(model, "text_eos_id", None)


class ImageTower(torch.nn.Module):
    """pixels (batch, 3, H, W), normalized -> features (batch, dim), not normalized."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: Any) -> Any:
        return self.model.encode_image(pixels)


class FullTextTower(torch.nn.Module):
    """tokens (batch, context_length) -> features (batch, dim): encode_text as it is."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Any) -> Any:
        return self.model.encode_text(tokens)


class CutTextTower(torch.nn.Module):
    """tokens (batch, L), L <= context_length -> features (batch, dim).

    CLIP.encode_text adds all context_length positions and the whole causal mask, which fixes
    the length; slicing both to L exports a graph that runs at any length. Under the causal
    mask the features read at the end-of-text token do not depend on what follows it, so a
    batch cut to its longest prompt gives encode_text's answer (fastpaths.encode_text_truncated).
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Any) -> Any:
        from clipcls.engine.fastpaths import encode_text_prefix

        # open_clip's own attention call (float mask), as the exported graph has always had
        return encode_text_prefix(self.model, tokens, fused=False)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress lines and warnings stay off the user's terminal (core never
    prints); a failure still raises with its own message."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def write_towers(model: Any, folder: Path) -> dict[str, Any]:
    """Export both towers into folder: the manifest's image, text, embed_dim and opset.

    Batch is dynamic in both; the text length too where the runtime may cut (the torch path's
    can_truncate_text), else fixed at context_length, padded as the tokenizer pads.
    """
    import open_clip

    from clipcls.engine.fastpaths import can_truncate_text

    size = open_clip.get_model_preprocess_cfg(model)["size"]
    height, width = (size, size) if isinstance(size, int) else size
    pixels = torch.randn(2, 3, int(height), int(width))
    with torch.no_grad():
        embed_dim = int(model.encode_image(pixels).shape[1])
    image_axes = {0: batch_axis()}
    export_tower(model, ImageTower(model), pixels, ("pixels", "features"), image_axes, folder)
    context_length = int(model.context_length)
    cut = can_truncate_text(model)
    vocab = int(_text_part(model, "token_embedding").num_embeddings)
    tokens = torch.randint(1, vocab, (2, context_length), dtype=torch.int64)
    tower = CutTextTower(model) if cut else FullTextTower(model)
    text_axes = {0: batch_axis(), **({1: length_axis(context_length)} if cut else {})}
    export_tower(model, tower, tokens, ("tokens", "features"), text_axes, folder)
    pool, eos_id = text_pool(model)
    return {
        "embed_dim": embed_dim,
        "opset": OPSET,
        "image": {"file": IMAGE_FILE, "input": "pixels", "output": "features"},
        "text": {
            "file": TEXT_FILE,
            "input": "tokens",
            "output": "features",
            "context_length": context_length,
            "cut": cut,
            "pool": pool,
            "eos_id": eos_id if pool == "eos" else None,  # argmax finds the end unaided
        },
    }


def _text_part(model: Any, name: str) -> Any:
    """A part of the text tower: on the model (CLIP) or on its text module (CustomTextCLIP)."""
    text = getattr(model, "text", None)
    return getattr(text if text is not None else model, name)


def export_tower(
    model: Any,
    tower: Any,
    example: Any,
    names: tuple[str, str],
    axes: dict[int, Any],
    folder: Path,
) -> None:
    """Export one tower with torch.onnx's dynamo exporter; weights as external data beside.
    Whatever the exporter raises is one line naming the family."""
    what = "image" if names[0] == "pixels" else "text"
    path = folder / (IMAGE_FILE if what == "image" else TEXT_FILE)
    try:
        _export(tower, example, names, axes, path)
    except UsageError:
        raise
    except Exception as error:  # torch.export and onnxscript raise many types
        raise UsageError(
            f"cannot export {family(model)} to ONNX: its {what} tower failed: {_cause(error)}"
        ) from error


def _cause(error: BaseException) -> str:
    """The innermost cause of an exporter error, on one line: torch.onnx wraps what failed
    in a TorchExportError whose own text is a colored banner about its steps."""
    while error.__cause__ is not None:
        error = error.__cause__
    first = ANSI_COLOR.sub("", (str(error).strip().splitlines() or [""])[0])
    return f"{type(error).__name__}: {first[:300]}"


def _export(
    tower: Any, example: Any, names: tuple[str, str], axes: dict[int, Any], path: Path
) -> None:
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            tower.eval(),
            (example,),
            input_names=[names[0]],
            output_names=[names[1]],
            dynamic_shapes={names[0]: axes},
            dynamo=True,
            opset_version=OPSET,
            verbose=False,
        )
        if program is None:
            raise UsageError(f"torch.onnx.export wrote no program for {path.name}")
        program.save(str(path), external_data=True)


def batch_axis() -> Any:
    return torch.export.Dim("batch", min=1, max=MAX_BATCH)


def length_axis(context_length: int) -> Any:
    return torch.export.Dim("length", min=2, max=context_length)


def tokenizer_entry(tokenizer: Any, folder: Path) -> dict[str, Any]:
    """Write the tokenizer's file into folder and say how to use it (the manifest's tokenizer)."""
    from open_clip import tokenizer as tokenizers

    cleans = {
        tokenizers._clean_lower: "lower",
        tokenizers._clean_whitespace: "whitespace",
        tokenizers._clean_canonicalize: "canonicalize",
    }
    clean = cleans.get(getattr(tokenizer, "clean_fn", None))
    kind = type(tokenizer).__name__
    if clean is None:
        raise UsageError(f"cannot export the tokenizer {kind}: its text cleaning is unknown")
    if isinstance(tokenizer, tokenizers.SimpleTokenizer):
        if tokenizer.reduction_fn is not None or tokenizer.vocab_size != CLIP_VOCAB:
            why = "reduces tokens" if tokenizer.reduction_fn is not None else "has extra tokens"
            raise UsageError(f"cannot export the tokenizer {kind}: it {why}")
        shutil.copyfile(tokenizers.default_bpe(), folder / BPE_FILE)
        return {
            "kind": "bpe",
            "file": BPE_FILE,
            "context_length": int(tokenizer.context_length),
            "clean": clean,
            "reduction": None,
        }
    if isinstance(tokenizer, tokenizers.HFTokenizer):
        return _hf_entry(tokenizer, folder, clean)
    raise UsageError(f"cannot export the tokenizer {kind}: clipcls knows BPE and HF ones")


def _hf_entry(tokenizer: Any, folder: Path, clean: str) -> dict[str, Any]:
    """Save a Hugging Face tokenizer as one tokenizers JSON, or say why it cannot be."""
    backend = getattr(tokenizer.tokenizer, "backend_tokenizer", None)
    name = type(tokenizer.tokenizer).__name__
    if tokenizer.tokenizer_mode:
        raise UsageError(f"cannot export {name}: tokenizer mode {tokenizer.tokenizer_mode!r}")
    if backend is None:
        raise UsageError(f"cannot export {name}: a slow tokenizer with no tokenizers JSON")
    backend.save(str(folder / HF_FILE))
    return {
        "kind": "hf",
        "file": HF_FILE,
        "context_length": int(tokenizer.context_length),
        "clean": clean,
        "strip_sep_token": bool(tokenizer.strip_sep_token),
        "pad_id": int(tokenizer.tokenizer.pad_token_id or 0),
    }


def source_digest(model: Any) -> str:
    """sha256 over the state dict: per key, sorted: the key's UTF-8, a NUL, then the tensor
    as float32 little-endian C-order bytes."""
    import numpy as np

    digest = hashlib.sha256()
    state = model.state_dict()
    for key in sorted(state):
        values = state[key].detach().to("cpu", torch.float32).contiguous().numpy()
        digest.update(key.encode("utf-8") + b"\0")
        digest.update(np.ascontiguousarray(values, dtype="<f4").tobytes())
    return f"sha256:{digest.hexdigest()}"
