"""The HTTP side of `clipcls serve`: LitServe on FastAPI/uvicorn, with a guard in front that
checks the API key, the body size and the request itself, answering 4xx JSON before anything
reaches the model; an info endpoint; loopback unless an API key is set."""

from __future__ import annotations

import asyncio
import hmac
import json
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

from clipcls import __version__
from clipcls.errors import UsageError
from clipcls.server.protocol import API_KEY_HEADER, Limits, RequestError
from clipcls.server.roots import resolve_roots
from clipcls.server.uploads import checked_request, read_body
from clipcls.settings import ModelSettings

LOOPBACK = ("127.0.0.1", "::1", "localhost")
HOSTS = {"localhost": "127.0.0.1", "127.0.0.1": "127.0.0.1", "0.0.0.0": "0.0.0.0", "::": "::"}
MAIN = [0]  # the pid of the process that runs LitServe
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


def check_options(options: ServeOptions) -> None:
    """Refuse a reachable server without a key, and hosts LitServe cannot bind."""
    if options.host not in HOSTS:
        raise UsageError(f"--host must be one of {', '.join(HOSTS)}, not {options.host!r}")
    if options.host not in LOOPBACK and not options.api_key:
        raise UsageError(
            f"--host {options.host} lets other machines in: set --api-key (or $CLIPCLS_API_KEY)"
        )
    if not 1024 <= options.port <= 65535:
        raise UsageError(f"--port must be from 1024 to 65535, not {options.port}")
    resolve_roots(options.allow_dirs)
    for host in options.url_hosts:
        if not host or any(c in host for c in " @?#\\") or host.count(":") == 1:
            raise UsageError(f"--allow-url-hosts takes host names or addresses, not {host!r}")
    host = HOSTS[options.host]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:  # before the model loads, not after
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:  # bound by another process that is still loading its model: listen() fails
            probe.bind((host, options.port))
            probe.listen()
        except OSError as error:
            where = f"{options.host} port {options.port}"
            raise UsageError(f"cannot listen on {where}: {error.strerror or error}") from None


class Guard:
    """ASGI middleware: every request shows the API key (when one is set); predict requests
    are read within the size limit, checked, and passed on as one JSON body."""

    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self.app = app
        self.api_key: str | None = options["api_key"]
        self.limits = Limits(**options["limits"])
        self.allow_dirs: list[str] = options["allow_dirs"]
        self.info_file = Path(options["info_file"])
        self.facts: dict[str, Any] = options["facts"]
        self.uploads = Path(options["uploads"])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        shown = headers.get(API_KEY_HEADER.lower(), "")
        if self.api_key and not hmac.compare_digest(shown.encode(), self.api_key.encode()):
            await _reply(send, 401, {"error": f"missing or wrong {API_KEY_HEADER} header"})
            return
        if scope["path"] == "/v1/info":
            await self._info(send)
            return
        if scope["path"] != "/v1/predict" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            raw = await read_body(
                receive, headers.get("content-length", ""), self.limits.max_body_bytes
            )
            checked = await checked_request(
                scope,
                headers.get("content-type", ""),
                raw,
                self.limits,
                self.allow_dirs,
                self.uploads,
            )
        except RequestError as error:
            await _reply(send, error.status, {"error": str(error)})
            return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                message: dict[str, Any] = await receive()  # the client's disconnect, when it comes
                return message
            sent = True
            return {"type": "http.request", "body": checked.body, "more_body": False}

        replaced = (b"content-type", b"content-length")
        kept = [(k, v) for k, v in scope["headers"] if k.lower() not in replaced]
        length = str(len(checked.body)).encode()
        json_headers = [(b"content-type", b"application/json"), (b"content-length", length)]
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            answer = self.app({**scope, "headers": kept + json_headers}, replay, tracked)
            await asyncio.wait_for(answer, self.limits.seconds)
        except asyncio.TimeoutError:
            if not started:  # the model may still finish it; this client has waited enough
                seconds = self.limits.seconds
                await _reply(send, 504, {"error": f"no answer within {seconds:g} s (--timeout)"})
        finally:
            checked.remove()

    async def _info(self, send: Any) -> None:
        from clipcls.server.worker import read_info

        model = read_info(self.info_file)
        if model is None:
            await _reply(send, 503, {"error": "the model is still loading"})
            return
        await _reply(send, 200, {**self.facts, **model})


async def _reply(send: Any, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
) -> None:
    """Load the model in LitServe's worker and answer until stopped (Ctrl-C or SIGTERM);
    on_ready gets the model's facts (model, device, precision, ...) once it can answer."""
    import litserve as ls

    from clipcls.server.protocol import machine_id
    from clipcls.server.worker import ClipclsAPI, Reach, die_with_parent
    from clipcls.webfetch import server_policy

    check_options(options)
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # uploads stay in memory
    base = Path(shm or tempfile.gettempdir())
    sweep_dead_servers(base)
    state = Path(tempfile.mkdtemp(prefix=f"{STATE_PREFIX}{os.getpid()}-", dir=base))
    info_file, uploads = state / "model.json", state / "uploads"
    uploads.mkdir(mode=0o700)
    roots = resolve_roots([*options.allow_dirs, str(uploads)])  # once, at start
    allow = [root.path for root in roots[:-1]]
    reach = Reach(roots, server_policy(options.url_hosts, options.limits.seconds))
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
    api = ClipclsAPI(settings, options.limits, [root.path for root in roots], info_file, reach)
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
    try:
        server.run(
            host=HOSTS[options.host],
            port=options.port,
            num_api_servers=1,
            log_level="warning",
            generate_client_file=False,
        )
    finally:
        shutil.rmtree(state, ignore_errors=True)
