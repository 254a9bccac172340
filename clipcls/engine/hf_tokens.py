"""A Hugging Face tokenizer without torch or transformers: the ids open_clip's HFTokenizer gives.

It reads a `tokenizers` tokenizer.json (an ONNX folder's copy), cleans each text with open_clip's
clean function, and encodes as transformers does for open_clip (special tokens added, truncated
and padded to context_length with the pad id; the separator zeroed where the model asks).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipcls.engine.bpe import CLEAN_MODES, clean_text
from clipcls.errors import ModelLoadError

SEP_TOKEN = "[SEP]"  # transformers' sep_token for BERT, the one family that strips it (CLIPA)
INSTALL = "pip install 'clipcls[onnx]'"


def _tokenizers() -> Any:
    """The `tokenizers` package, or one line saying how to install it."""
    # open_clip turns the Rust thread pool off on import: a fork (decode workers, Ray) after
    # a parallel encode would otherwise warn on stderr. Same here, unless the user chose.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import tokenizers
    except ImportError as error:
        raise ModelLoadError(
            f"this model's tokenizer needs the tokenizers package ({error}): {INSTALL}"
        ) from None
    return tokenizers


class HfTokenizer:
    """Texts -> (n, context_length) int64 ids, as open_clip's HFTokenizer with that file."""

    def __init__(
        self,
        tokenizer_file: str | Path,
        context_length: int = 77,
        clean: str = "whitespace",
        strip_sep_token: bool = False,
        pad_id: int = 0,
        sep_id: int | None = None,
    ):
        """sep_id: the separator strip_sep_token zeroes (default: the [SEP] token's id)."""
        if clean not in CLEAN_MODES:
            raise ModelLoadError(f"unknown tokenizer clean mode {clean!r}: one of {CLEAN_MODES}")
        if context_length < 1:
            raise ModelLoadError(f"context length {context_length} leaves no room for a token")
        tokenizers = _tokenizers()
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_file))
        except Exception as error:  # tokenizers raises bare Exception for any unreadable file
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ModelLoadError(f"cannot read the tokenizer {tokenizer_file}: {reason}") from None
        specials = tokenizer.num_special_tokens_to_add(is_pair=False)
        if context_length < specials:  # tokenizers would then leave texts uncut
            raise ModelLoadError(
                f"context length {context_length} cannot hold {tokenizer_file}'s {specials} "
                "special tokens"
            )
        if strip_sep_token and sep_id is None:
            sep_id = tokenizer.token_to_id(SEP_TOKEN)
            if sep_id is None:
                raise ModelLoadError(f"{tokenizer_file} has no {SEP_TOKEN} token to strip")
        self.context_length = context_length
        self.clean = clean
        self.pad_id = pad_id
        self.sep_id = sep_id if strip_sep_token else None
        # transformers' padding="max_length", truncation=True (longest first, from the right)
        tokenizer.enable_truncation(max_length=context_length)
        pad_token = tokenizer.id_to_token(pad_id) or "[PAD]"
        tokenizer.enable_padding(length=context_length, pad_id=pad_id, pad_token=pad_token)
        self._tokenizer = tokenizer

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids (n, context_length) int64, each text cleaned first."""
        if isinstance(texts, str):
            raise TypeError("HfTokenizer takes a sequence of texts, not one string")
        cleaned = [clean_text(text, self.clean) for text in texts]
        encodings = self._tokenizer.encode_batch(cleaned)
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            out[row] = encoding.ids
        if self.sep_id is not None:
            out[out == self.sep_id] = 0  # open_clip writes zeros, whatever the pad id
        return out
