"""The Ray Data engine: the same classification, spread over a Ray cluster. The driver lists the
files; CPU tasks decode them; an actor pool, each actor loading the model once (one GPU per
actor where there are GPUs), embeds and scores with the local engine's own code; predictions
stream back to the driver, which writes them through the same writers."""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import threading
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from clipcls.classify import LabelScore, Prediction
from clipcls.engine.ray_workers import Embedder, Scorer, decode
from clipcls.errors import UsageError
from clipcls.labels import Label
from clipcls.pathtext import path_to_text, text_to_path
from clipcls.prompts import TemplateSet
from clipcls.remote import is_url
from clipcls.settings import Device, ModelSettings

INSTALL = "--engine ray needs Ray Data: pip install 'clipcls[ray]'"
ACTOR_BATCH = 64  # paths per call of an actor without --batch-size (rows come back per call)


def check_ray() -> None:
    """A UsageError with the install line unless Ray Data is installed (imports nothing)."""
    if any(importlib.util.find_spec(name) is None for name in ("ray", "pyarrow")):
        raise UsageError(INSTALL)


def require_ray() -> Any:
    """The ray module, or a UsageError with the install line."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError(INSTALL) from None
    return ray


def connect(address: str | None) -> None:
    """Join the cluster at address, else $RAY_ADDRESS, else start a local Ray for this run."""
    check_ray()
    import ray

    if ray.is_initialized():
        return
    # Ray Data's import (~0.6 s) overlaps the wait for Ray's processes to start.
    importing = threading.Thread(target=_import_ray_data, name="clipcls-import", daemon=True)
    importing.start()
    ray.init(
        address=address or os.environ.get("RAY_ADDRESS") or None,
        log_to_driver=False,
        include_dashboard=False,
        logging_level=logging.ERROR,
    )
    importing.join()
    atexit.register(_leave, ray)
    for name in ("ray", "ray.data"):  # stderr is for clipcls's own notices and warnings
        logging.getLogger(name).setLevel(logging.ERROR)
    require_ray().data.DataContext.get_current().enable_progress_bars = False


def _import_ray_data() -> None:
    """Import Ray Data ahead; a failure is said once, by require_ray in the main thread."""
    with contextlib.suppress(UsageError):
        require_ray()


def _leave(ray: Any) -> None:
    """Disconnect (stopping a Ray started for this run) at exit, without the half second Ray's
    own exit hook sleeps to let worker logs print: this run does not forward them."""
    ray.shutdown()
    atexit.unregister(ray.shutdown)


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
    decode_tasks: bool | None = None,
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
        use_cache=use_cache,
        embeddings=embeddings,
    )
    with warnings.catch_warnings():  # Ray 2.60 names max_restarts a deprecated remote arg
        warnings.simplefilter("ignore")
        batch = batch_size or ACTOR_BATCH
        mapped = _mapped(ray, Scorer, items, kwargs, batch, actors, decode_tasks)
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
    ray: Any,
    actor: type,
    items: list[dict[str, str]],
    kwargs: Any,
    batch: int,
    actors: int | None,
    decode_tasks: bool | None,
) -> Any:
    """The items through a pool of actor (one GPU each where there are GPUs, else one CPU).

    With GPUs, CPU tasks decode ahead of the actors (decode_tasks=None picks that). On CPU-only
    nodes each actor decodes its own batches, decoding and computing in turns with every core as
    the local engine does: side by side, torch's threads and the decoders would share the cores
    and both slow down (benchmarks/README.md, "Ray").
    """
    gpus = int(ray.cluster_resources().get("GPU", 0))
    size = actors or max(1, gpus or int(ray.cluster_resources().get("CPU", 1)) // 2)
    settings: ModelSettings = kwargs["settings"]
    device = settings.device.value
    if settings.device is Device.AUTO:
        device = "cuda" if gpus else "cpu"
    # One block per actor call: Ray Data's default cuts small lists into many tiny blocks, each
    # scheduled on its own, which cost seconds on a small machine.
    batch = max(batch, 1)
    blocks = max(1, -(-len(items) // batch))
    dataset = ray.data.from_items(items, override_num_blocks=blocks)
    if decode_tasks if decode_tasks is not None else gpus > 0:
        dataset = dataset.map_batches(
            decode,
            fn_kwargs=dict(settings=settings, device=device, use_cache=kwargs["use_cache"]),
            batch_size=batch,
            num_cpus=1,
        )
    return dataset.map_batches(
        actor,
        fn_constructor_kwargs=kwargs,
        batch_size=batch,
        compute=ray.data.ActorPoolStrategy(size=size),
        num_gpus=1 if gpus else 0,
        num_cpus=0 if gpus else 1,
        # A lost actor is not restarted: Ray Data retries its tasks on the others, and no
        # restart means no warning about constructor arguments kept for one.
        max_restarts=0,
    )


def embed_on_ray(
    paths: Iterable[Path | str],
    settings: ModelSettings,
    batch_size: int | None = None,
    actors: int | None = None,
    use_cache: bool = True,
    decode_tasks: bool | None = None,
) -> dict[str, tuple[np.ndarray | None, str | None]]:
    """Each path's image embedding, or its error, computed by an actor pool."""
    ray = require_ray()
    items = _items(paths)
    kwargs = dict(settings=settings, use_cache=use_cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = batch_size or ACTOR_BATCH
        mapped = _mapped(ray, Embedder, items, kwargs, batch, actors, decode_tasks)
    found: dict[str, tuple[np.ndarray | None, str | None]] = {}
    for row in mapped.iter_rows():
        vector = np.asarray(row["embedding"], dtype=np.float32) if len(row["embedding"]) else None
        found[text_to_path(row["path"])] = (vector, row["error"] or None)
    return found
