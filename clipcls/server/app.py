"""The HTTP side of `clipcls serve`: LitServe on FastAPI/uvicorn behind the guard (guard.py),
the port bound before the model loads, an info endpoint, loopback unless an API key is set,
and a clean stop on a signal or a dead worker."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clipcls.client.protocol import Limits
from clipcls.client.wire import check_api_key
from clipcls.errors import ClipclsError, UsageError
from clipcls.fewshot.served import folder_labels
from clipcls.scoring.spec import SUPPORT_NOT_MULTI_LABEL
from clipcls.server.guard import Guard
from clipcls.server.roots import resolve_roots
from clipcls.settings import ModelSettings
from clipcls.version import __version__

LOOPBACK = ("127.0.0.1", "::1", "localhost")
HOSTS = {"localhost": "127.0.0.1", "127.0.0.1": "127.0.0.1", "0.0.0.0": "0.0.0.0", "::": "::"}
MAIN = [0]  # the pid of the process that runs LitServe
STOPPING: list[int] = []  # the stop signal, once one came: a worker that ends then was stopped
STOP_WAIT = 0.5  # seconds uvicorn gives requests in flight when the server stops
STATE_PREFIX = "clipcls-serve-"  # then the server's pid: its state folder (uploads, model facts)


@dataclass(frozen=True)
class ServeOptions:
    """Where and how the server listens, and what it lets a request do."""

    host: str = "127.0.0.1"
    port: int = 8765
    api_key: str | None = None
    allow_dirs: tuple[str, ...] = ()
    limits: Limits = Limits()
    url_hosts: tuple[str, ...] = ()  # fetched even at private addresses (--allow-url-hosts)
    no_cache: bool = False  # keep no embedding cache (--no-cache)
    support: Path | None = None  # example images in DIR/<label>/ (--support)
    multi_label: bool = False  # each label's own probability for requests that do not say


def check_options(options: ServeOptions) -> None:
    """Refuse a reachable server without a key, and hosts LitServe cannot bind."""
    if options.host not in HOSTS:
        raise UsageError(f"--host must be one of {', '.join(HOSTS)}, not {options.host!r}")
    if options.api_key:
        check_api_key(options.api_key, "--api-key (or $CLIPCLS_API_KEY)")
    if options.host not in LOOPBACK and not options.api_key:
        raise UsageError(
            f"--host {options.host} lets other machines in: set --api-key (or $CLIPCLS_API_KEY)"
        )
    if not 1024 <= options.port <= 65535:
        raise UsageError(f"--port must be from 1024 to 65535, not {options.port}")
    resolve_roots(options.allow_dirs)
    if options.support is not None and options.multi_label:
        raise UsageError(SUPPORT_NOT_MULTI_LABEL)
    if options.support is not None:
        folder_labels(options.support)  # a folder with no label folders: refused before loading
    for host in options.url_hosts:
        if not host or any(c in host for c in " @?#\\") or host.count(":") == 1:
            raise UsageError(f"--allow-url-hosts takes host names or addresses, not {host!r}")


def listen(options: ServeOptions) -> socket.socket:
    """Bind and listen on the server's port now, before the model loads, and keep it: a
    second server started on the same port at the same time fails here, not after loading."""
    host = HOSTS[options.host]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not SO_REUSEPORT
    try:
        sock.bind((host, options.port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        where = f"{options.host} port {options.port}"
        raise UsageError(f"cannot listen on {where}: {error.strerror or error}") from None
    sock.set_inheritable(True)  # LitServe's HTTP process serves on it
    return sock


def sweep_dead_servers(base: Path) -> None:
    """Remove the state folders (uploads included) of servers of this user that died without
    cleaning up (kill -9, a power cut): each folder is named after its server's pid."""
    for folder in base.glob(f"{STATE_PREFIX}*-*"):
        pid = folder.name.removeprefix(STATE_PREFIX).partition("-")[0]
        try:
            if not pid.isdigit() or folder.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue  # alive (PermissionError: another user's process), or gone already


def _stop(signum: int, frame: Any) -> None:
    """SIGTERM or Ctrl-C: the main process lets LitServe stop its workers; a process it forked
    (which inherits this handler) just exits, without a traceback."""
    if os.getpid() != MAIN[0]:
        raise SystemExit(0)
    STOPPING.append(signum)
    # LitServe's worker monitor may log a traceback as its manager goes away: stopping is ours.
    logging.getLogger("litserve").setLevel(logging.CRITICAL)
    raise KeyboardInterrupt


def _watch(
    info_file: Path, address: tuple[str, int], on_ready: Callable[[dict[str, Any]], None]
) -> None:
    """Call on_ready with the worker's facts once its model is up and the port answers."""
    from clipcls.server.worker import read_info

    while (facts := read_info(info_file)) is None:
        time.sleep(0.2)
    while True:
        try:
            socket.create_connection(address, timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    on_ready(facts)


def serve(
    settings: ModelSettings,
    options: ServeOptions,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Load the model in LitServe's worker and answer until stopped (Ctrl-C or SIGTERM);
    on_ready gets the model's facts (model, device, precision, ...) once it can answer.
    sock: listen()'s socket, when the caller bound the port already."""
    import litserve as ls

    from clipcls.client.wire import machine_id
    from clipcls.server.connections import HeadDeadline
    from clipcls.server.loading import answer_while_loading
    from clipcls.server.worker import ClipclsAPI, Reach, die_with_parent
    from clipcls.webfetch import server_policy

    check_options(options)
    sock = sock or listen(options)
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # uploads stay in memory
    base = Path(shm or tempfile.gettempdir())
    sweep_dead_servers(base)
    state = Path(tempfile.mkdtemp(prefix=f"{STATE_PREFIX}{os.getpid()}-", dir=base))
    info_file, uploads = state / "model.json", state / "uploads"
    uploads.mkdir(mode=0o700)
    roots = resolve_roots([*options.allow_dirs, str(uploads)])  # once, at start
    allow = [root.path for root in roots[:-1]]
    reach = Reach(roots, server_policy(options.url_hosts, options.limits.seconds), str(uploads))
    facts = {
        "clipcls": __version__,
        "machine": machine_id(),
        "allow_dirs": allow,
        "allow_url_hosts": list(options.url_hosts),
        "limits": asdict(options.limits),
    }
    guard = {
        "api_key": options.api_key,
        "limits": asdict(options.limits),
        "allow_dirs": allow,
        "info_file": str(info_file),
        "facts": facts,
        "uploads": str(uploads),
    }
    folders = [root.path for root in roots]
    api = ClipclsAPI(
        settings,
        options.limits,
        folders,
        info_file,
        reach,
        not options.no_cache,
        options.support,
        options.multi_label,
    )
    server = ls.LitServer(
        api,
        accelerator=settings.device.value,  # auto, cpu, cuda or mps, as LitServe names them
        devices=1,
        timeout=options.limits.seconds,
        healthcheck_path="/healthz",
        info_path="/v1/litserve-info",
        middlewares=[(Guard, {"options": guard})],
        fast_queue=True,
        disable_openapi_url=True,
    )
    if on_ready is not None:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(HOSTS[options.host], HOSTS[options.host])
        address = (host, options.port)
        watch = threading.Thread(target=_watch, args=(info_file, address, on_ready), daemon=True)
        watch.start()
    MAIN[0] = os.getpid()
    # LitServe forks its HTTP process and a multiprocessing manager: they go when this goes.
    os.register_at_fork(after_in_child=lambda: die_with_parent(MAIN[0]))
    for stop in (signal.SIGTERM, signal.SIGINT):  # LitServe stops its workers, then returns
        signal.signal(stop, _stop)
    answer_while_loading(sock, info_file.exists, options.api_key)  # LitServe answers once up
    HeadDeadline.seconds = min(HeadDeadline.seconds, options.limits.seconds)
    server.uvicorn_graceful_timeout = STOP_WAIT  # LitServe's 30 s held SIGTERM that long
    try:
        server.run(
            host=HOSTS[options.host],
            port=options.port,
            num_api_servers=1,
            log_level="warning",
            generate_client_file=False,
            fd=sock.fileno(),  # uvicorn serves on our socket instead of binding its own
            http=HeadDeadline,
        )
    except (KeyboardInterrupt, EOFError, OSError):  # EOFError: LitServe stopped its manager
        if not _worker_died(server):
            raise
    finally:
        shutil.rmtree(state, ignore_errors=True)
    if _worker_died(server):
        raise ClipclsError("the model worker died (killed, or out of memory?); the server stopped")


def _worker_died(server: Any) -> bool:
    """Whether a LitServe model worker ended by itself (a signal, a crash), not by our stop."""
    if STOPPING:
        return False
    codes = [worker.exitcode for worker in server.inference_workers]
    return any(code not in (None, 0, -signal.SIGTERM) for code in codes)
