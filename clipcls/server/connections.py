"""uvicorn's HTTP protocol with a deadline on a request's head: a connection that has not sent
a whole request line and headers within HEAD_SECONDS (at most the server's --timeout) of
opening, or of its last answer, is closed. uvicorn has no such deadline, so slowloris headers
or idle connections that never send a request were held for ever, each a file descriptor."""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
except ImportError:  # httptools is optional; uvicorn falls back to h11 too
    from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

HEAD_SECONDS = 10.0


class HeadDeadline(Base):
    """uvicorn's protocol, closing connections whose next request head is late."""

    seconds = HEAD_SECONDS  # set before LitServe forks its HTTP process

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def _arm(self) -> None:
        self.loop.call_later(self.seconds, self._expire, self.cycle)

    def _expire(self, cycle: Any) -> None:
        """No request began since the timer was armed: close (a request in progress is the
        guard's to time, with --timeout)."""
        idle = self.cycle is cycle and (cycle is None or cycle.response_complete)
        if idle and not self.transport.is_closing():
            self.transport.close()
