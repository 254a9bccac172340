"""Zero-shot against a support set on the same images: K drawn examples per class over several
folds (`--shots`), or a given support folder (`--support`), each setup's accuracy and ECE."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipcls.evaluation.dataset import EmbeddedDataset
from clipcls.evaluation.metrics import Metrics, compute_metrics
from clipcls.fewshot.calibration import reliability
from clipcls.fewshot.support import SupportFiles
from clipcls.pathtext import clean_text
from clipcls.scoring.adapter import SupportSet
from clipcls.scoring.heads import softmax
from clipcls.scoring.scorer import Scorer
from clipcls.scoring.spec import with_support

ZERO_SHOT, SUPPORT = "zero-shot", "support"


@dataclass(frozen=True)
class FewShotPlan:
    """What to compare zero-shot with: K examples per class drawn from the dataset itself
    (shots, over folds seeded from seed), or a support folder's examples."""

    shots: int | None = None
    folds: int = 5
    seed: int = 0
    support: SupportFiles | None = None


@dataclass(frozen=True)
class FewShotResult:
    """Each setup's metrics per fold (one fold for a support folder), and the cache model's
    alpha and beta as leave-one-out chose them."""

    plan: FewShotPlan
    setups: dict[str, dict[str, list[float | None]]]  # setup -> metric -> value per fold
    alphas: tuple[float, ...]
    betas: tuple[float, ...]
    notes: tuple[str, ...] = ()  # said once by the caller: classes too small, shared images
    examples: int = 0  # support images used (per fold, for shots)


def measures(
    metrics: Metrics, probabilities: np.ndarray, targets: np.ndarray
) -> dict[str, float | None]:
    """One setup's headline numbers on one fold: top-1, top-k where there are more classes
    than k, the mean per-class accuracy and the calibration error."""
    n_classes = probabilities.shape[1] if probabilities.ndim == 2 else 0
    found: dict[str, float | None] = {"top1": metrics.top1}
    found |= {f"top{k}": v for k, v in sorted(metrics.top_k.items()) if k < n_classes}
    found["balanced_accuracy"] = metrics.balanced_accuracy
    found["ece"] = reliability(probabilities, targets).ece if len(targets) else None
    return found


def spread(values: Sequence[float | None]) -> dict[str, float | list[float | None] | None]:
    """mean, std (over folds, population), min, max and the folds' own values."""
    known = np.array([v for v in values if v is not None], dtype=np.float64)
    if not len(known):
        return {"mean": None, "std": None, "min": None, "max": None, "per_fold": list(values)}
    return {
        "mean": round(float(known.mean()), 6),
        "std": round(float(known.std()), 6),
        "min": round(float(known.min()), 6),
        "max": round(float(known.max()), 6),
        "per_fold": [None if v is None else round(v, 6) for v in values],
    }


def chosen_text(result: FewShotResult, listed: int = 10) -> str:
    """What leave-one-out chose, per fold; over `listed` folds each pair once with its count
    (1,000 folds would print a screenful of them)."""
    pairs = [f"{a:g}/{b:g}" for a, b in zip(result.alphas, result.betas, strict=True)]
    if len(pairs) <= listed:
        return ", ".join(pairs)
    counted = Counter(pairs).most_common()
    return ", ".join(f"{pair} in {n} fold{'s' if n > 1 else ''}" for pair, n in counted)


def draw_support(
    targets: np.ndarray, class_names: Sequence[str], shots: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    """Rows drawn as examples, K per class; a class with K images or fewer keeps one to be
    scored (and one of a single image gives none): the notes say which."""
    rows, notes = [], []
    for index, name in enumerate(class_names):
        mine = np.flatnonzero(targets == index)
        if len(mine) == 0:
            continue
        take = min(shots, len(mine) - 1)
        if take < shots:
            used = f"{take} used as support" if take else "none used as support"
            count = f"{len(mine)} image{'s' if len(mine) > 1 else ''}"
            notes.append(f"class {clean_text(name)} has only {count}: {used}")
        rows.append(rng.choice(mine, size=take, replace=False))
    drawn = np.sort(np.concatenate(rows)) if rows else np.zeros(0, dtype=np.int64)
    return drawn, notes


def drawn_set(
    data: EmbeddedDataset, rows: np.ndarray, names: tuple[str, ...], identity: str
) -> SupportSet:
    """The drawn images as a support set (no input is one of them: `where` is empty)."""
    keys = data.embeddings[rows].astype(np.float32)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    paths = tuple(data.paths[i] for i in rows)
    return SupportSet(keys, data.targets[rows], paths, names, identity, {})


def shot_folds(
    scorer: Scorer, data: EmbeddedDataset, plan: FewShotPlan, ks: tuple[int, ...]
) -> FewShotResult:
    """Each fold: K images per class drawn as the support set, the rest scored zero-shot and
    with it; the zero-shot logits are computed once."""
    assert plan.shots is not None
    names = tuple(label.name for label in scorer.labels)
    n_classes = len(names)
    zero_logits, _ = scorer.logits(data.embeddings)
    setups: dict[str, dict[str, list[float | None]]] = {ZERO_SHOT: {}, SUPPORT: {}}
    alphas, betas, examples = [], [], 0
    notes: list[str] = []
    for fold in range(plan.folds):
        rng = np.random.default_rng([plan.seed, fold])
        drawn, notes = draw_support(data.targets, names, plan.shots, rng)
        rest = np.setdiff1d(np.arange(len(data.targets)), drawn)
        targets = data.targets[rest]
        scored = {ZERO_SHOT: softmax(zero_logits[rest])}
        if len(drawn):
            support = drawn_set(data, drawn, names, f"shots:{plan.shots}:fold{fold}")
            adapted = with_support(scorer, support)
            assert adapted.adapter is not None
            scored[SUPPORT] = softmax(adapted.logits(data.embeddings[rest])[0])
            alphas.append(adapted.adapter.alpha)
            betas.append(adapted.adapter.beta)
        else:
            scored[SUPPORT] = scored[ZERO_SHOT]
        examples = len(drawn)
        for setup, probabilities in scored.items():
            metrics = compute_metrics(targets, probabilities, n_classes, ks)
            for name, value in measures(metrics, probabilities, targets).items():
                setups[setup].setdefault(name, []).append(value)
    return FewShotResult(plan, setups, tuple(alphas), tuple(betas), tuple(notes), examples)


def support_folder(
    paths: Sequence[str],
    measured: dict[str, dict[str, float | None]],
    plan: FewShotPlan,
    support: SupportSet,
) -> FewShotResult:
    """The given folder's result: each setup's measures on every image (paths), one fold."""
    shared = sum(support.index_of(path) is not None for path in paths)
    said = f"{shared} support images are also dataset images: each left out of its own neighbours"
    setups = {
        name: {key: [value] for key, value in found.items()} for name, found in measured.items()
    }
    notes = (said,) if shared else ()
    return FewShotResult(plan, setups, (), (), notes, len(support.paths))


def few_shot_json(result: FewShotResult) -> dict[str, Any]:
    """The `few_shot` object of the JSON report: per setup, each metric's spread over the
    folds (a support folder's single numbers as they are)."""
    plan = result.plan
    head: dict[str, Any]
    setups: dict[str, dict[str, Any]] = {}
    for setup, metrics in result.setups.items():
        spreads = {name: spread(values) for name, values in metrics.items()}
        single = plan.support is not None
        setups[setup] = {name: s["mean"] if single else s for name, s in spreads.items()}
    if plan.support is None:
        head = {"shots": plan.shots, "folds": plan.folds, "seed": plan.seed}
        chosen: dict[str, Any] = {"alpha": list(result.alphas), "beta": list(result.betas)}
    else:
        head = {"support": str(plan.support.folder), "identity": plan.support.identity()}
        chosen = {"alpha": next(iter(result.alphas), None), "beta": next(iter(result.betas), None)}
    return {**head, "examples": result.examples, "setups": setups, **chosen}
