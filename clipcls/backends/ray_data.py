"""The Ray Data engine: the same embedding, spread over a Ray cluster. The driver lists the
files; CPU tasks decode them; an actor pool, each actor loading the model once (one GPU per
actor where there are GPUs), embeds with the local engine's own code; embeddings stream back
to the driver as prediction records, and the run scores them there."""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import os
import socket
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from clipcls.backends.ray_workers import Embedder, decode
from clipcls.errors import ClipclsError, UsageError
from clipcls.pathtext import clean_text, path_to_text
from clipcls.prediction import Prediction
from clipcls.remote import is_url
from clipcls.settings import Device, ModelSettings

INSTALL = "--engine ray needs Ray Data: pip install 'clipcls[ray]'"
PROBE_SECONDS = 10.0  # to connect to the cluster's address before Ray tries it
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
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        check_reachable(address)
    # Ray Data's import (~0.6 s) overlaps the wait for Ray's processes to start.
    importing = threading.Thread(target=_import_ray_data, name="clipcls-import", daemon=True)
    importing.start()
    try:
        ray.init(
            address=address,
            log_to_driver=False,
            include_dashboard=False,
            logging_level=logging.ERROR,
        )
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ClipclsError(
            f"cannot join the Ray cluster at {address or 'this machine'}: {_first_line(error)}"
        ) from None
    importing.join()
    atexit.register(_leave, ray)
    # stderr is for clipcls's own notices and warnings: a failure of the cluster is raised as
    # one ClipclsError (_rows), so Ray Data's own error log of it is not printed too.
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    _silence_raylet_messages()
    require_ray().data.DataContext.get_current().enable_progress_bars = False


def check_reachable(address: str, timeout: float = PROBE_SECONDS) -> None:
    """A ClipclsError unless something accepts connections at address (HOST:PORT, optionally
    ray://): Ray itself retries a dead address for minutes, printing its own log lines."""
    if address == "auto":
        return  # Ray finds the cluster started on this machine, or says there is none
    where = address.removeprefix("ray://")
    host, _, port = where.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise UsageError(f"the Ray address {address!r} is not HOST:PORT (or ray://HOST:PORT)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        why = "no answer" if isinstance(error, TimeoutError) else error.strerror or str(error)
        raise ClipclsError(
            f"cannot reach the Ray cluster at {address}: {why}; check --ray-address or "
            "RAY_ADDRESS (the head node's GCS address, HOST:6379 by default)"
        ) from None


def _silence_raylet_messages() -> None:
    """Drop the raylet's messages (`(raylet) A worker died ...`), which Ray prints to stdout
    even with log_to_driver off: stdout is for results, and the failure they tell of reaches
    the user as one error line (_rows)."""
    module = sys.modules.get("ray._private.worker")
    original = getattr(module, "print_to_stdstream", None)
    if original is None or getattr(original, "clipcls_quiet", False):
        return

    def quiet(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            original(data, ignore_prefix)

    quiet.clipcls_quiet = True  # type: ignore[attr-defined]
    module.print_to_stdstream = quiet  # type: ignore[union-attr]


def _rows(ray: Any, mapped: Any) -> Iterator[dict[str, Any]]:
    """The dataset's rows; a failure of the cluster (a killed actor or node) as a ClipclsError."""
    try:
        yield from mapped.iter_rows()
    except ray.exceptions.RayError as error:
        raise ClipclsError(f"the Ray cluster failed: {_first_line(error)}") from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _import_ray_data() -> None:
    """Import Ray Data ahead; a failure is said once, by require_ray in the main thread."""
    with contextlib.suppress(UsageError):
        require_ray()


def _leave(ray: Any) -> None:
    """Disconnect (stopping a Ray started for this run) at exit, without the half second Ray's
    own exit hook sleeps to let worker logs print: this run does not forward them."""
    ray.shutdown()
    atexit.unregister(ray.shutdown)


def _prediction(row: dict[str, Any], cwd: str) -> Prediction:
    """The Prediction an actor sent as its record (an embedding, or an error naming the path
    as given)."""
    try:
        prediction = Prediction.from_record(json.loads(row["record"]), ())
    except ValueError as error:  # a RecordError, or no JSON at all
        raise ClipclsError(f"the Ray cluster sent a row clipcls cannot read: {error}") from None
    if prediction.error is None:
        return prediction
    return replace(prediction, error=_as_given(prediction.error, prediction.path, cwd))


def _as_given(error: str, path: str, cwd: str) -> str:
    """The error with the path the actor loaded (made absolute) written as the user gave it,
    as the local engine writes it."""
    if is_url(path) or os.path.isabs(path):
        return error
    return error.replace(clean_text(os.path.join(cwd, path)), clean_text(path))


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
) -> Iterator[Prediction]:
    """Each path's image embedding, or its error, computed by an actor pool: one Prediction per
    path in the order they finish (not the input order), each with the path as given.

    Local paths are sent absolute, so that actors on any node of a shared file system find
    them."""
    ray = require_ray()
    items = _items(paths)
    if not items:
        return
    kwargs = dict(settings=settings, use_cache=use_cache)
    with warnings.catch_warnings():  # Ray 2.60 names max_restarts a deprecated remote arg
        warnings.simplefilter("ignore")
        batch = batch_size or ACTOR_BATCH
        mapped = _mapped(ray, Embedder, items, kwargs, batch, actors, decode_tasks)
    cwd = os.getcwd()  # as _items made the paths absolute
    for row in _rows(ray, mapped):
        yield _prediction(row, cwd)
