"""A support set's examples and their cache model: each image's affinity to the example
embeddings of every label, added to the zero-shot logits (Tip-Adapter, training-free), alpha
and beta chosen by leave-one-out on the examples themselves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from clipcls.pathtext import path_key

# Tip-Adapter's published ImageNet choice (alpha 1.0, beta 5.5), used where leave-one-out cannot
# choose: a label with a single example has nothing left to vote for it when that one is out.
DEFAULT_ALPHA = 1.0
DEFAULT_BETA = 5.5
# The search grid; alpha 0 is zero-shot itself, so a support set that does not help on its own
# examples is not used (a plain linear probe at 16 shots scores below zero-shot: this cannot).
ALPHAS = (0.0, 0.1, 0.3, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0)
BETAS = (0.5, 1.0, 2.0, 3.5, 5.5, 7.5, 10.0, 20.0)


@dataclass(frozen=True, eq=False)  # equal only to itself: its matrix is not compared
class SupportSet:
    """Embedded examples: what the cache model needs, and which inputs are examples."""

    keys: np.ndarray  # (n_examples, dim), unit rows
    targets: np.ndarray  # (n_examples,) label index
    paths: tuple[str, ...]
    labels: tuple[str, ...]
    identity: str

    where: Mapping[str, int]  # path_key of each example -> its row

    def index_of(self, path: str) -> int | None:
        """The example that is the file at path, if it is one."""
        return self.where.get(path_key(str(path)))

    def counts(self) -> dict[str, int]:
        """Examples per label name (labels without any left out)."""
        tally = np.bincount(self.targets, minlength=len(self.labels))
        return {name: int(n) for name, n in zip(self.labels, tally, strict=True) if n}


@dataclass(frozen=True)
class TipAdapter:
    """Example embeddings with their label indices, and how much their vote counts."""

    keys: np.ndarray  # (n_examples, dim), unit rows
    targets: np.ndarray  # (n_examples,) label index
    n_labels: int
    alpha: float = DEFAULT_ALPHA
    beta: float = DEFAULT_BETA
    chosen_by: str = "defaults"  # or "leave-one-out"

    def affinity(self, embeddings: np.ndarray) -> np.ndarray:
        """exp(-beta * (1 - cos)): (n_images, dim) @ (dim, n_examples) -> (n_images, n_examples)."""
        cosines = embeddings.astype(np.float32) @ self.keys.T
        affinity: np.ndarray = np.exp(-self.beta * (1.0 - cosines))
        return affinity

    def logits(self, embeddings: np.ndarray, exclude: Sequence[int | None] = ()) -> np.ndarray:
        """alpha x the affinity summed per label, (n_images, n_labels); exclude[i] names an
        example that is image i itself (an input that is also a support image), left out."""
        affinity = self.affinity(embeddings)
        for row, example in enumerate(exclude):
            if example is not None:
                affinity[row, example] = 0.0
        votes: np.ndarray = affinity @ one_hot(self.targets, self.n_labels)
        return self.alpha * votes


def one_hot(targets: np.ndarray, n_labels: int) -> np.ndarray:
    """(n,) label indices -> (n, n_labels) of 0 and 1."""
    table = np.zeros((len(targets), n_labels), dtype=np.float32)
    table[np.arange(len(targets)), targets] = 1.0
    return table


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    result: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return result


def fit_adapter(
    keys: np.ndarray, targets: np.ndarray, zero_shot: np.ndarray, n_labels: int
) -> TipAdapter:
    """Choose alpha and beta by leave-one-out over the examples.

    zero_shot: the examples' own zero-shot logits, (n_examples, n_labels). Each example is
    scored by all the others; the pair with the most right answers wins, ties going to the
    lower log-loss, then to the smaller alpha (closer to zero-shot). Where a label has a single
    example, the defaults are used and chosen_by says so.
    """
    targets = np.asarray(targets, dtype=np.int64)
    counts = np.bincount(targets, minlength=n_labels)
    if len(targets) < 2 or counts[counts > 0].min() < 2:
        return TipAdapter(keys, targets, n_labels)
    labels = one_hot(targets, n_labels)
    zero_shot = zero_shot.astype(np.float32)  # float32 throughout: 1,600 examples in ~0.1 s
    cosines = keys.astype(np.float32) @ keys.T.astype(np.float32)
    votes = {}
    right: dict[tuple[float, float], int] = {}
    for beta in BETAS:
        affinity = np.exp(np.float32(-beta) * (np.float32(1.0) - cosines))
        np.fill_diagonal(affinity, 0.0)  # each example left out of its own vote
        votes[beta] = affinity @ labels  # (n_examples, n_labels)
        for alpha in ALPHAS:
            logits = zero_shot + np.float32(alpha) * votes[beta]
            right[alpha, beta] = int((logits.argmax(axis=1) == targets).sum())
    most = max(right.values())
    rows = np.arange(len(targets))
    # Only the pairs tied for the most right answers need their log-loss.
    best = min(
        (
            round(
                float(-_log_softmax(zero_shot + np.float32(a) * votes[b])[rows, targets].mean()), 6
            ),
            a,
            b,
        )
        for (a, b), count in right.items()
        if count == most
    )
    return TipAdapter(keys, targets, n_labels, best[1], best[2], "leave-one-out")
