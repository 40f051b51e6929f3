"""Running a Switchboard ASGI app (the control plane or the call worker) under uvicorn or
granian, with the HTTP server's own guard: a connection that does not finish its request headers
within SWITCHBOARD_HTTP_HEADER_TIMEOUT_SECONDS is closed.

uvicorn starts its keep-alive clock only after a response, so a client that connects and then
sends headers slowly (or never) would hold the connection forever; thousands of them exhaust
the server. Request bodies are bounded in time by the control plane's request-limits middleware.
"""

import asyncio
import contextlib
import logging
import sys
from functools import cache
from typing import Any, Literal, Protocol

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from switchboard_runtime.worker.direct_stream import DirectStreamProtocol
from switchboard_runtime.worker.settings import ServerSettings

HttpServer = Literal["uvicorn", "granian"]

# How uvicorn serves WebSockets here (the CLI and the test servers alike): media streams a call
# can take over (direct_stream), and no permessage-deflate. Compressing base64 audio saves about
# a third of its bytes for ~20 µs of CPU per frame (deflate one way, inflate the other), on the
# loop every call's audio waits on; clients that offer it (browsers do) are answered without it.
UVICORN_WEBSOCKETS: dict[str, Any] = {"ws": DirectStreamProtocol, "ws_per_message_deflate": False}


# Where an app's lifespan state holds its `StopGate` (the call worker's, when it drains).
STOP_GATE = "switchboard.stop_gate"

logger = logging.getLogger(__name__)


class StopGate(Protocol):
    def begin_stopping(self) -> None: ...

    @property
    def streams_owed(self) -> int: ...


class SwitchboardServer(uvicorn.Server):
    """uvicorn's server; on SIGTERM, an app with a `StopGate` is told to stop taking calls, and
    the server goes on listening until the media streams of the calls the app already answered
    have arrived. Only then does uvicorn's own shutdown begin (stop listening, drain).

    Without this, a call answered just before the signal would be lost: the phone provider
    opens its stream a moment after the webhook's answer, and would find nobody listening.
    The wait is bounded by the app (an owed stream is forgotten once its hold runs out); a
    second Ctrl-C still stops at once."""

    stopping = False

    async def on_tick(self, counter: int) -> bool:
        should_exit = await super().on_tick(counter)
        if not should_exit or self.force_exit:
            return should_exit
        gate: StopGate | None = self.lifespan.state.get(STOP_GATE)
        if gate is None:
            return True
        began = not self.stopping
        if began:
            self.stopping = True
            gate.begin_stopping()
        owed = gate.streams_owed
        if began and owed:
            logger.info(
                "stopping: no new calls; waiting for the media streams of %d answered calls", owed
            )
        return owed == 0


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
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "info",
        "access_log": False,
        "http": HeaderTimeoutProtocol,
        **UVICORN_WEBSOCKETS,
    }
    if workers > 1 or reload:
        uvicorn.run(factory, factory=True, workers=workers, reload=reload, **options)
        return
    # One process, as uvicorn.run would serve it, on the server that keeps owed streams.
    one = SwitchboardServer(uvicorn.Config(factory, factory=True, **options))
    with contextlib.suppress(KeyboardInterrupt):
        one.run()
    if not one.started:
        sys.exit(STARTUP_FAILURE)


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
