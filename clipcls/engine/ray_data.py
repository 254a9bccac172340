"""The Ray Data engine: the same classification, spread over a Ray cluster. The driver lists the
files; an actor pool, each actor loading the model once (one GPU per actor where there are
GPUs), decodes, embeds and scores batches with the local engine's own code; predictions
stream back to the driver, which writes them through the same writers."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from clipcls.cache import EmbeddingCache
from clipcls.classify import Classifier, LabelScore, Prediction, default_batch_size
from clipcls.errors import UsageError
from clipcls.labels import Label
from clipcls.output.rows import clean_text
from clipcls.pathtext import path_to_text, text_to_path
from clipcls.pipeline import embed_paths
from clipcls.prompts import TemplateSet
from clipcls.remote import is_url
from clipcls.settings import ModelSettings

ACTOR_BATCH = 64  # paths per call of an actor without --batch-size (rows come back per call)


def require_ray() -> Any:
    """The ray module, or a UsageError with the install line."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError("--engine ray needs Ray Data: pip install 'clipcls[ray]'") from None
    return ray


def connect(address: str | None) -> None:
    """Join the cluster at address, else $RAY_ADDRESS, else start a local Ray for this run."""
    ray = require_ray()
    if ray.is_initialized():
        return
    for name in ("ray", "ray.data"):  # stderr is for clipcls's own notices and warnings
        logging.getLogger(name).setLevel(logging.ERROR)
    ray.init(
        address=address or os.environ.get("RAY_ADDRESS") or None,
        log_to_driver=False,
        include_dashboard=False,
        logging_level="ERROR",
    )
    ray.data.DataContext.get_current().enable_progress_bars = False


class Scorer:
    """A Ray actor: the model loaded once, then batches of paths in, predictions out."""

    def __init__(
        self,
        settings: ModelSettings,
        labels: tuple[Label, ...],
        templates: TemplateSet,
        batch_size: int | None,
        use_cache: bool,
        embeddings: bool,
    ) -> None:
        from clipcls.engine.model import ClipModel

        cache = EmbeddingCache(settings.resolved_cache_dir()) if use_cache else None
        self.classifier = Classifier(ClipModel(settings), labels, templates, batch_size, cache)
        self.embeddings = embeddings

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {
            key: [] for key in ("path", "error", "labels", "probs", "sims", "embedding")
        }
        found = self.classifier.classify_paths([text_to_path(str(p)) for p in batch["load"]])
        for path, prediction in zip(batch["path"], found, strict=True):
            out["path"].append(str(path))
            out["error"].append(clean_text(prediction.error or ""))
            out["labels"].append([s.label for s in prediction.scores])
            out["probs"].append([s.probability for s in prediction.scores])
            out["sims"].append([s.similarity for s in prediction.scores])
            keep = self.embeddings and prediction.embedding is not None
            out["embedding"].append(prediction.embedding.tolist() if keep else [])  # type: ignore[union-attr]
        return out


def _prediction(row: dict[str, Any]) -> Prediction:
    path = text_to_path(row["path"])
    if row["error"]:
        return Prediction(path, error=row["error"])
    scores = tuple(
        LabelScore(str(label), float(p), float(s))
        for label, p, s in zip(row["labels"], row["probs"], row["sims"], strict=True)
    )
    vector = np.asarray(row["embedding"], dtype=np.float32) if len(row["embedding"]) else None
    return Prediction(path, scores, embedding=vector)


def classify_on_ray(
    paths: Iterable[Path | str],
    settings: ModelSettings,
    labels: tuple[Label, ...],
    templates: TemplateSet,
    batch_size: int | None = None,
    actors: int | None = None,
    use_cache: bool = True,
    embeddings: bool = False,
) -> Iterator[Prediction]:
    """One Prediction per path, in the order they finish (not the input order).

    Local paths are sent absolute, so that actors on any node of a shared file system find
    them; each prediction carries the path as given.
    """
    ray = require_ray()
    items = _items(paths)
    if not items:
        return
    kwargs = dict(
        settings=settings,
        labels=labels,
        templates=templates,
        batch_size=batch_size,
        use_cache=use_cache,
        embeddings=embeddings,
    )
    with warnings.catch_warnings():  # Ray 2.60 names max_restarts a deprecated remote arg
        warnings.simplefilter("ignore")
        mapped = _mapped(ray, Scorer, items, kwargs, batch_size or ACTOR_BATCH, actors)
    for row in mapped.iter_rows():
        yield _prediction(row)


def _items(paths: Iterable[Path | str]) -> list[dict[str, str]]:
    """Each path as given, and as the actors load it (absolute, unless a URL), as pathtext
    writes them: Arrow, which carries Ray Data's blocks, takes only valid UTF-8."""
    cwd = os.getcwd()
    return [
        {
            "path": path_to_text(str(p)),
            "load": path_to_text(str(p) if is_url(p) else os.path.join(cwd, str(p))),
        }
        for p in paths
    ]


def _mapped(
    ray: Any, actor: type, items: list[dict[str, str]], kwargs: Any, batch: int, actors: int | None
) -> Any:
    """The items through a pool of actor (one GPU each where there are GPUs, else one CPU)."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    size = actors or max(1, gpus or int(ray.cluster_resources().get("CPU", 1)) // 2)
    # One block per actor call: Ray Data's default cuts small lists into many tiny blocks, each
    # scheduled on its own, which cost seconds on a small machine.
    blocks = max(1, -(-len(items) // max(batch, 1)))
    return ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        actor,
        fn_constructor_kwargs=kwargs,
        batch_size=max(batch, 1),
        compute=ray.data.ActorPoolStrategy(size=size),
        num_gpus=1 if gpus else 0,
        num_cpus=0 if gpus else 1,
        # A lost actor is not restarted: Ray Data retries its tasks on the others, and no
        # restart means no warning about constructor arguments kept for one.
        max_restarts=0,
    )


class Embedder:
    """A Ray actor for evaluate: the model loaded once, then batches of paths in, image
    embeddings (or errors) out; scoring stays on the driver, once per template set."""

    def __init__(self, settings: ModelSettings, batch_size: int | None, use_cache: bool) -> None:
        from clipcls.engine.model import ClipModel

        self.encoder = ClipModel(settings)
        self.cache = EmbeddingCache(settings.resolved_cache_dir()) if use_cache else None
        self.batch_size = batch_size or default_batch_size(self.encoder.plan.device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"path": [], "error": [], "embedding": []}
        loads = [text_to_path(str(p)) for p in batch["load"]]
        given = iter(str(p) for p in batch["path"])
        for done in embed_paths(self.encoder, loads, self.batch_size, self.cache):
            vectors = iter(done.embeddings)
            for error in done.errors:
                out["path"].append(next(given))
                out["error"].append(clean_text(error or ""))
                out["embedding"].append([] if error else next(vectors).tolist())
        return out


def embed_on_ray(
    paths: Iterable[Path | str],
    settings: ModelSettings,
    batch_size: int | None = None,
    actors: int | None = None,
    use_cache: bool = True,
) -> dict[str, tuple[np.ndarray | None, str | None]]:
    """Each path's image embedding, or its error, computed by an actor pool."""
    ray = require_ray()
    items = _items(paths)
    kwargs = dict(settings=settings, batch_size=batch_size, use_cache=use_cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mapped = _mapped(ray, Embedder, items, kwargs, batch_size or ACTOR_BATCH, actors)
    found: dict[str, tuple[np.ndarray | None, str | None]] = {}
    for row in mapped.iter_rows():
        vector = np.asarray(row["embedding"], dtype=np.float32) if len(row["embedding"]) else None
        found[text_to_path(row["path"])] = (vector, row["error"] or None)
    return found
