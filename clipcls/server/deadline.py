"""The server's text tower with a deadline: a request's prompts are embedded in slices and the
work stops once the request's time (--timeout) is spent, so one huge label set cannot hold the
model worker long after its client was told 504."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from clipcls.classify import TEXT_CHUNK
from clipcls.errors import ClipclsError
from clipcls.pipeline import EmbedPlan, Encoder, ModelInfo

# Prompts embedded between two looks at the clock: the chunk a local run embeds at once, so that
# the chunks a --server client sends are embedded in the very batches a local run would use
# (the same floats, not just float-noise close).
SLICE = TEXT_CHUNK


class OutOfTime(ClipclsError):
    """A request's prompts were not all embedded within its time."""


class DeadlineEncoder:
    """An Encoder that embeds texts SLICE at a time until `deadline` (time.monotonic())."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.info: ModelInfo = encoder.info
        self.plan: EmbedPlan = encoder.plan
        self.logit_scale: float = encoder.logit_scale
        self.logit_bias: float | None = encoder.logit_bias
        self.deadline = float("inf")

    def prepare(self, image: Image.Image) -> Any:
        return self.encoder.prepare(image)

    def encode_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        return self.encoder.encode_prepared(prepared)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) -> (n, dim), like the wrapped encoder; OutOfTime once past the deadline."""
        parts = []
        for start in range(0, len(texts), SLICE):
            if time.monotonic() > self.deadline:
                done = f"{start} of {len(texts)} prompts"
                raise OutOfTime(f"out of time after embedding {done} (--timeout)")
            parts.append(self.encoder.encode_texts(texts[start : start + SLICE]))
        return np.concatenate(parts) if parts else self.encoder.encode_texts(texts)
