"""The HTTP side of `clipcls serve`: LitServe on FastAPI/uvicorn, with a guard in front that
checks the API key, the body size and the request itself, answering 4xx JSON before anything
reaches the model; an info endpoint; loopback unless an API key is set."""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import signal
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clipcls import __version__
from clipcls.errors import UsageError
from clipcls.server.protocol import API_KEY_HEADER, Limits, RequestError, parse_request
from clipcls.settings import ModelSettings

LOOPBACK = ("127.0.0.1", "::1", "localhost")
HOSTS = {"localhost": "127.0.0.1", "127.0.0.1": "127.0.0.1", "0.0.0.0": "0.0.0.0", "::": "::"}
FORM_FIELDS = ("labels", "templates", "top_k", "embedding")
MAIN = [0]  # the pid of the process that runs LitServe
DRAIN = 64 * 1024**2  # bytes over the limit still read (and dropped) so the client gets the 413


@dataclass(frozen=True)
class ServeOptions:
    """Where and how the server listens, and what it lets a request do."""

    host: str = "127.0.0.1"
    port: int = 8765
    api_key: str | None = None
    allow_dirs: tuple[str, ...] = ()
    limits: Limits = Limits()


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
    for root in options.allow_dirs:
        if not Path(root).is_dir():
            raise UsageError(f"--allow-dir {root} is not a folder")


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
            body = await self._checked_body(scope, headers, receive)
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
            return {"type": "http.request", "body": body, "more_body": False}

        scope = dict(scope)
        scope["headers"] = [
            (k, v)
            for k, v in scope["headers"]
            if k.lower() not in (b"content-type", b"content-length")
        ] + [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await self.app(scope, replay, send)

    async def _info(self, send: Any) -> None:
        from clipcls.server.worker import read_info

        model = read_info(self.info_file)
        if model is None:
            await _reply(send, 503, {"error": "the model is still loading"})
            return
        await _reply(send, 200, {**self.facts, **model})

    async def _checked_body(self, scope: Any, headers: dict[str, str], receive: Any) -> bytes:
        limit = self.limits.max_body_bytes
        too_big = RequestError(413, f"the body is over the server's limit of {limit} bytes")
        raw = bytearray()
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "the client went away")
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen <= limit:
                raw += chunk
            elif seen > limit + DRAIN:
                raise too_big  # enough read: the connection closes under the client
            if not message.get("more_body"):
                break
        if seen > limit:
            raise too_big  # read to the end, so the client hears why
        kind = headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            request = await _form_to_json(scope, bytes(raw), self.limits)
        else:
            try:
                request = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise RequestError(400, "the body is not valid JSON") from None
        parse_request(request, self.limits, self.allow_dirs)
        return json.dumps(request).encode()


async def _form_to_json(scope: Any, raw: bytes, limits: Limits) -> dict[str, Any]:
    """A multipart form (files under `images`, the other fields as text) as the JSON request."""
    from starlette.requests import Request

    async def once() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    try:
        form = await Request(scope, once).form(max_files=limits.max_images, max_fields=20)
    except Exception as error:  # python-multipart and starlette raise several kinds
        raise RequestError(400, f"cannot read the multipart form: {error}") from None
    request: dict[str, Any] = {"images": []}
    for key, value in form.multi_items():
        if key == "images" and not isinstance(value, str):
            data = await value.read()
            name = value.filename or f"image[{len(request['images'])}]"
            request["images"].append({"name": name, "data": base64.b64encode(data).decode()})
        elif key in FORM_FIELDS and isinstance(value, str):
            request[key] = _form_value(key, value)
        else:
            raise RequestError(400, f"unknown form field {key!r}")
    return request


def _form_value(key: str, value: str) -> Any:
    if key == "top_k":
        return int(value) if value.isdigit() else value
    if key == "embedding":
        return value.lower() in ("1", "true", "yes")
    if key == "templates" and value.startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            raise RequestError(400, "'templates' is not a JSON list") from None
    return value


async def _reply(send: Any, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _stop(signum: int, frame: Any) -> None:
    """SIGTERM or Ctrl-C: the main process lets LitServe stop its workers; a process it forked
    (which inherits this handler) just exits, without a traceback."""
    if os.getpid() != MAIN[0]:
        raise SystemExit(0)
    # LitServe's worker monitor may log a traceback as its manager goes away: stopping is ours.
    logging.getLogger("litserve").setLevel(logging.CRITICAL)
    raise KeyboardInterrupt


def serve(settings: ModelSettings, options: ServeOptions) -> None:
    """Load the model in LitServe's worker and answer until stopped (Ctrl-C or SIGTERM)."""
    import litserve as ls

    from clipcls.server.protocol import machine_id
    from clipcls.server.worker import ClipclsAPI

    check_options(options)
    state = Path(tempfile.mkdtemp(prefix="clipcls-serve-"))
    info_file = state / "model.json"
    allow = [str(Path(d).resolve()) for d in options.allow_dirs]
    facts = {
        "clipcls": __version__,
        "machine": machine_id(),
        "allow_dirs": allow,
        "limits": asdict(options.limits),
    }
    guard = {
        "api_key": options.api_key,
        "limits": asdict(options.limits),
        "allow_dirs": allow,
        "info_file": str(info_file),
        "facts": facts,
    }
    api = ClipclsAPI(settings, options.limits, allow, info_file)
    server = ls.LitServer(
        api,
        accelerator=settings.device.value,  # auto, cpu, cuda or mps, as LitServe names them
        devices=1,
        timeout=options.limits.seconds,
        healthcheck_path="/healthz",
        info_path="/v1/litserve-info",
        middlewares=[(Guard, {"options": guard})],
    )
    MAIN[0] = os.getpid()
    for stop in (signal.SIGTERM, signal.SIGINT):  # LitServe stops its workers, then returns
        signal.signal(stop, _stop)
    server.run(
        host=HOSTS[options.host],
        port=options.port,
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
    )
