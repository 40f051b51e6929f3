"""Running a Switchboard ASGI app (the control plane or the call worker) under uvicorn or
granian, with the HTTP server's own guard: a connection that does not finish its request headers
within SWITCHBOARD_HTTP_HEADER_TIMEOUT_SECONDS is closed.

uvicorn starts its keep-alive clock only after a response, so a client that connects and then
sends headers slowly (or never) would hold the connection forever; thousands of them exhaust
the server. Request bodies are bounded in time by the control plane's request-limits middleware.
"""

import asyncio
from functools import cache
from typing import Any, Literal

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from switchboard_runtime.worker.direct_stream import DirectStreamProtocol
from switchboard_runtime.worker.settings import ServerSettings

HttpServer = Literal["uvicorn", "granian"]

# How uvicorn serves WebSockets here (the CLI and the test servers alike): media streams a call
# can take over (direct_stream), and no permessage-deflate. Compressing base64 audio saves about
# a third of its bytes for ~20 µs of CPU per frame (deflate one way, inflate the other), on the
# loop every call's audio waits on; clients that offer it (browsers do) are answered without it.
UVICORN_WEBSOCKETS: dict[str, Any] = {"ws": DirectStreamProtocol, "ws_per_message_deflate": False}


@cache
def header_timeout_seconds() -> float:
    return ServerSettings().http_header_timeout_seconds


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


def serve(
    factory: str,
    *,
    host: str,
    port: int,
    server: HttpServer = "uvicorn",
    workers: int = 1,
    reload: bool = False,
) -> None:
    """Serve an app factory ("module:function") until stopped (SIGTERM drains and exits)."""
    if server == "granian":
        _serve_with_granian(factory, host, port, workers, reload)
        return
    import uvicorn

    uvicorn.run(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        log_level="info",
        access_log=False,
        http=HeaderTimeoutProtocol,
        **UVICORN_WEBSOCKETS,
    )


def _serve_with_granian(factory: str, host: str, port: int, workers: int, reload: bool) -> None:
    """granian (Rust HTTP) on an app factory, with its own header-read timeout."""
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.server import Server

    Server(
        factory,
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        reload=reload,
        http1_settings=HTTP1Settings(header_read_timeout=int(header_timeout_seconds() * 1000)),
    ).serve()
