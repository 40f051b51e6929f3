"""The HTTP server's own guard: a connection that does not finish its request headers within
SWITCHBOARD_HTTP_HEADER_TIMEOUT_SECONDS is closed.

uvicorn starts its keep-alive clock only after a response, so a client that connects and then
sends headers slowly (or never) would hold the connection forever; thousands of them exhaust
the server. Request bodies are bounded in time by the request-limits middleware.
"""

import asyncio
from functools import cache
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from control_plane.settings import Settings


@cache
def header_timeout_seconds() -> float:
    return Settings().http_header_timeout_seconds


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a clock from connection (or the start of the next
    request on a kept-alive connection) to the end of the request headers."""

    header_clock: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._start_header_clock()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.header_clock is None:
            self._start_header_clock()

    def on_headers_complete(self) -> None:
        self._stop_header_clock()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_clock()
        super().connection_lost(exc)

    def _start_header_clock(self) -> None:
        self.header_clock = self.loop.call_later(header_timeout_seconds(), self._too_slow)

    def _stop_header_clock(self) -> None:
        if self.header_clock is not None:
            self.header_clock.cancel()
            self.header_clock = None

    def _too_slow(self) -> None:
        self.header_clock = None
        self.transport.close()
