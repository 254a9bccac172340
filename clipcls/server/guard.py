"""The guard in front of LitServe: the API key on every request, predict bodies read within
their size limit, read deadline and the server's budget, checked before the model sees them
(4xx JSON), and a worker's error answer for one request sent with its own status."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from pathlib import Path
from typing import Any

from clipcls.client.protocol import ERROR_STATUS, Limits, RequestError
from clipcls.client.wire import API_KEY_HEADER
from clipcls.server.loading import LOADING
from clipcls.server.uploads import Budget, Held, checked_request, read_body


class Guard:
    """ASGI middleware: every request shows the API key (when one is set); predict requests
    are read within the size limit, the read deadline and the server's budget for bodies in
    flight, checked, and passed on as one JSON body; a worker's error answer for one request
    goes out with its own status."""

    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self.app = app
        self.api_key: str | None = options["api_key"]
        self.limits = Limits(**options["limits"])
        self.allow_dirs: list[str] = options["allow_dirs"]
        self.info_file = Path(options["info_file"])
        self.facts: dict[str, Any] = options["facts"]
        self.uploads = Path(options["uploads"])
        self.budget = Budget(self.limits.max_pending_bytes)

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
        if scope["path"] == "/healthz" and not self._ready():
            await _reply(send, 503, LOADING)  # not LitServe's early word: ready means the model
            return
        if scope["path"] != "/v1/predict" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        held = Held(self.budget)
        try:
            await self._predict(scope, headers, receive, send, held)
        finally:
            held.release()

    async def _predict(
        self, scope: Any, headers: dict[str, str], receive: Any, send: Any, held: Held
    ) -> None:
        seconds = self.limits.seconds
        started = time.monotonic()
        try:
            reading = read_body(
                receive, headers.get("content-length", ""), self.limits.max_body_bytes, held
            )
            raw = await asyncio.wait_for(reading, seconds)
            checked = await checked_request(
                scope,
                headers.get("content-type", ""),
                raw,
                self.limits,
                self.allow_dirs,
                self.uploads,
            )
        except asyncio.TimeoutError:
            await _reply(send, 408, {"error": f"the body was not sent within {seconds:g} s"})
            return
        except RequestError as error:
            await _reply(send, error.status, {"error": str(error)})
            return
        try:
            left = max(0.1, seconds - (time.monotonic() - started))
            await self._answer(scope, receive, send, checked.body, left)
        finally:
            checked.remove()

    async def _answer(self, scope: Any, receive: Any, send: Any, body: bytes, left: float) -> None:
        """Hand the checked body to LitServe and its answer to the client, within left s."""
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                message: dict[str, Any] = await receive()  # the client's disconnect, when it comes
                return message
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        replaced = (b"content-type", b"content-length")
        kept = [(k, v) for k, v in scope["headers"] if k.lower() not in replaced]
        length = str(len(body)).encode()
        json_headers = [(b"content-type", b"application/json"), (b"content-length", length)]
        out = Answer(send)
        try:
            answer = self.app({**scope, "headers": kept + json_headers}, replay, out.send)
            await asyncio.wait_for(answer, left)
        except asyncio.TimeoutError:
            if not out.started:  # the model may still finish it; this client has waited enough
                seconds = self.limits.seconds
                await _reply(send, 504, {"error": f"no answer within {seconds:g} s (--timeout)"})

    async def _info(self, send: Any) -> None:
        from clipcls.server.worker import read_info

        model = read_info(self.info_file)
        if model is None:
            await _reply(send, 503, LOADING)
            return
        await _reply(send, 200, {**self.facts, **model})

    def _ready(self) -> bool:
        """Whether the model worker has loaded its model (it writes its facts then)."""
        return self.info_file.exists()


class Answer:
    """LitServe's answer on its way out; a worker's error answer ({"error", "status"}) goes
    out with that status instead of 200."""

    def __init__(self, send: Any) -> None:
        self.out = send
        self.start: dict[str, Any] | None = None
        self.started = False

    async def send(self, message: dict[str, Any]) -> None:
        self.started = True
        if message["type"] == "http.response.start" and message.get("status") == 200:
            self.start = message  # held until the body shows whether it is an error
            return
        start, self.start = self.start, None
        if start is not None and message["type"] == "http.response.body":
            error = _worker_error(message.get("body", b""), message.get("more_body", False))
            if error is not None:
                await _reply(self.out, error[0], {"error": error[1]})
                return
        if start is not None:
            await self.out(start)
        await self.out(message)


def _worker_error(body: bytes, more: bool) -> tuple[int, str] | None:
    if more or not body.startswith(b'{"error"'):
        return None
    try:
        payload = json.loads(body)
        return int(payload[ERROR_STATUS]), str(payload["error"])
    except (ValueError, KeyError, TypeError):
        return None


async def _reply(send: Any, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
