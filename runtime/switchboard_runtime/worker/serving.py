"""Running a Switchboard ASGI app (the control plane or the call worker) under uvicorn or
granian, with the HTTP server's own guards on requests still arriving: headers within
SWITCHBOARD_HTTP_HEADER_TIMEOUT_SECONDS, the body within its deadline, and a bound per client
address on such requests (`GuardedHttpProtocol`); and, for an app that offers them, instant
answers: a GET whose whole response the app already knows is answered as its headers are
parsed, without an ASGI task (`INSTANT_ANSWERS`).

uvicorn starts its keep-alive clock only after a response, so a client that connects and then
sends headers or a body slowly (or never) would hold the connection forever; thousands of them
exhaust the server. The apps bound bodies themselves too (`bounded_body.BoundedBody`, with a
408 or 413 the client can read); the server's clock is the backstop for bodies no route reads.
Under granian only its own header-read timeout applies.
"""

import asyncio
import contextlib
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

import httptools
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from switchboard_runtime.logging import RepeatedWarnings
from switchboard_runtime.worker.media_plane import MAX_FRAME_BYTES
from switchboard_runtime.worker.settings import ProxyNetworks, ServerSettings, is_trusted_proxy

HttpServer = Literal["uvicorn", "granian"]
T = TypeVar("T")

# How uvicorn serves WebSockets here (the CLI and the test servers alike), for a worker app
# without its media plane: no permessage-deflate (compressing base64 audio saves about a third
# of its bytes for ~20 µs of CPU per frame, on the loop every call's audio waits on; clients that
# offer it, browsers do, are answered without it), and messages capped at 64 KiB (uvicorn's
# default is 16 MiB). On `switchboard worker` call sockets go to the media plane instead.
UVICORN_WEBSOCKETS: dict[str, Any] = {
    "ws": "websockets-sansio",
    "ws_per_message_deflate": False,
    "ws_max_size": MAX_FRAME_BYTES,
}


# Where an app's lifespan state holds its `StopGate` (the call worker's, when it drains).
STOP_GATE = "switchboard.stop_gate"
# Where an app's lifespan state holds its `InstantAnswers` (the control plane's hot reads).
INSTANT_ANSWERS = "switchboard.instant_answers"


class InstantAnswer(NamedTuple):
    """A whole response, as ASGI would send it: status, headers (lowercase names), body."""

    status: int
    headers: Sequence[tuple[bytes, bytes]]
    body: bytes


# Given the scope of a GET without a body, the app's whole answer if it knows it already (no
# I/O, no waiting), else None: the request then goes to the app as usual.
InstantAnswers = Callable[[dict[str, Any]], InstantAnswer | None]

# A request with a body is never answered instantly: its body would arrive with no one to read it.
BODY_HEADERS = (b"content-length", b"transfer-encoding")


@cache
def status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())


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


@dataclass(frozen=True)
class HttpGuards:
    """The server's own bounds on a connection (`ServerSettings`)."""

    header_timeout_seconds: float
    # Past the app's own body deadline (which answers 408), the server closes the connection:
    # this catches bodies no route reads (a 404 or 405 answered before the body arrived).
    body_timeout_seconds: float
    max_pending_per_address: int
    trusted_proxies: ProxyNetworks

    def trusts(self, address: str | None) -> bool:
        return is_trusted_proxy(address, self.trusted_proxies)


# Time the app has, past its own body deadline, to send its 408 before the server closes.
BODY_GRACE_SECONDS = 1.0


@cache
def http_guards() -> HttpGuards:
    settings = ServerSettings()
    return HttpGuards(
        header_timeout_seconds=settings.http_header_timeout_seconds,
        body_timeout_seconds=settings.http_body_timeout_seconds + BODY_GRACE_SECONDS,
        max_pending_per_address=settings.http_max_pending_per_address,
        trusted_proxies=settings.trusted_proxy_networks,
    )


def per_server(server_state: Any, name: str, make: Callable[[], T]) -> T:
    """What the guards keep for one server, made on first use and kept on uvicorn's server
    state as `name` (not in a module global: tests run several servers in one process)."""
    found: T | None = getattr(server_state, name, None)
    if found is None:
        found = make()
        setattr(server_state, name, found)
    return found


def server_warnings(server_state: Any) -> RepeatedWarnings:
    """The server's own refusals, each kind logged at most once a minute."""
    return per_server(server_state, "switchboard_warnings", lambda: RepeatedWarnings(logger))


def pending_requests(server_state: Any) -> dict[str, int]:
    """Per client address, its connections whose request has not fully arrived. A plain dict:
    `Counter`'s deletion is Python code, run once a request."""
    return per_server(server_state, "switchboard_pending", dict)


# How often a server looks for connections past their deadline: a slow or idle client is closed
# within its bound plus this.
DEADLINE_TICK_SECONDS = 0.1


class Deadlines:
    """The deadlines of one server's guarded connections, checked by one sweep a tick.

    A timer per request (one started as a request begins and cancelled as its headers arrive,
    one for its body, uvicorn's keep-alive after its response) costs a hot read about a seventh
    of its time in the server; a deadline is a float the connection writes on itself."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.connections: set[GuardedHttpProtocol] = set()
        self.sweep: asyncio.TimerHandle | None = None

    def watch(self, connection: "GuardedHttpProtocol") -> None:
        self.connections.add(connection)
        if self.sweep is None:
            self.sweep = self.loop.call_later(DEADLINE_TICK_SECONDS, self._sweep)

    def forget(self, connection: "GuardedHttpProtocol") -> None:
        self.connections.discard(connection)

    def _sweep(self) -> None:
        now = self.loop.time()
        for connection in [c for c in self.connections if c.deadline <= now]:
            connection.deadline_passed()
        self.sweep = None
        if self.connections:
            self.sweep = self.loop.call_later(DEADLINE_TICK_SECONDS, self._sweep)


def deadlines(server_state: Any, loop: asyncio.AbstractEventLoop) -> Deadlines:
    return per_server(server_state, "switchboard_deadlines", lambda: Deadlines(loop))


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the server's own guards on a request still arriving:
    - a deadline from connection (or the start of the next request on a kept-alive
      connection) to the end of the request headers, then another to the end of the body
      (`Deadlines`: closed within the bound plus DEADLINE_TICK_SECONDS);
    - at most `max_pending_per_address` such requests per client address (trusted proxies
      aside, which carry many clients): one more from that address is closed at once.
    A WebSocket upgrade leaves these guards; the app bounds its sockets itself.

    It also answers instantly what the app's `INSTANT_ANSWERS` know: the response is written as
    the request's headers complete, with the server's own headers (date, server) first, as
    uvicorn's response cycle would write them. The cycle costs about a third of a cached read
    (an asyncio task, the ASGI messages, header checks); a read the app already holds as bytes
    needs none of it. Only a plain HTTP/1.1 keep-alive GET without a body, on a connection with
    no response still owed (pipelined requests keep their order) and no write backlog (a client
    that does not read gets the usual cycle, which waits for it), is answered this way."""

    pending: dict[str, int]  # the server's `pending_requests`
    deadlines: Deadlines  # the server's
    deadline = math.inf  # loop time by which the connection must have moved on (`Deadlines`)
    pending_as: str | None = None  # the address this connection counts under while pending
    answered_now = False  # the request being parsed was answered instantly

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.pending = pending_requests(self.server_state)
        self.deadlines = deadlines(self.server_state, self.loop)
        self.deadlines.watch(self)
        if self._begin_request():
            self._allow(http_guards().header_timeout_seconds)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.pending_as is None and self._begin_request():
            self._allow(http_guards().header_timeout_seconds)

    def on_headers_complete(self) -> None:
        self.deadline = math.inf
        response = self._instant_response()
        if response is not None:
            self.answered_now = True
            self.transport.write(response)
            return
        super().on_headers_complete()
        if self.pending_as is not None:
            self._allow(http_guards().body_timeout_seconds)

    def on_message_complete(self) -> None:
        self._end_request()
        if self.answered_now:
            # What uvicorn does after any response, its keep-alive timer aside: the connection
            # may stay idle for as long as uvicorn would let it.
            self.answered_now = False
            self.server_state.total_requests += 1
            self._allow(self.timeout_keep_alive)
            return
        super().on_message_complete()

    def _instant_response(self) -> bytes | None:
        """The whole response to the request whose headers just arrived, if the app knows it."""
        answers: InstantAnswers | None = self.app_state.get(INSTANT_ANSWERS)
        if answers is None or not self._may_answer_now():
            return None
        url = httptools.parse_url(self.url)
        raw_path: bytes = url.path
        if b"%" in raw_path:  # the usual cycle decodes it
            return None
        scope = self.scope
        scope["method"] = "GET"
        scope["path"] = raw_path.decode("ascii")
        scope["raw_path"] = raw_path
        scope["query_string"] = url.query or b""
        answer = answers(scope)  # type: ignore[arg-type]
        if answer is None:
            return None
        parts = [status_line(answer.status)]
        for name, value in (*self.server_state.default_headers, *answer.headers):
            parts += (name, b": ", value, b"\r\n")
        parts += (b"\r\n", answer.body)
        return b"".join(parts)

    def _may_answer_now(self) -> bool:
        return self._plain_get() and not self._response_owed() and not self._client_behind()

    def _plain_get(self) -> bool:
        """An HTTP/1.1 keep-alive GET, without a body or an upgrade, at the server's root."""
        parser = self.parser
        return (
            parser.get_method() == b"GET"
            and parser.get_http_version() == "1.1"
            and parser.should_keep_alive()
            and not parser.should_upgrade()
            and not self.root_path
            and not any(name in BODY_HEADERS for name, _ in self.headers)
        )

    def _response_owed(self) -> bool:
        """Whether an earlier request on this connection still waits for its response: a
        pipelined request takes its turn."""
        return not (self.cycle is None or self.cycle.response_complete) or bool(self.pipeline)

    def _client_behind(self) -> bool:
        """Whether the client is not reading what was written: the usual cycle waits for it
        (and stops reading the client's further requests); an instant answer would not."""
        return bool(self.flow.write_paused)

    def handle_websocket_upgrade(self) -> None:
        self._end_request()
        self.deadlines.forget(self)  # the socket's protocol bounds it
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_request()
        self.deadlines.forget(self)
        super().connection_lost(exc)

    def deadline_passed(self) -> None:
        self.deadline = math.inf
        self.transport.close()

    def _begin_request(self) -> bool:
        guards = http_guards()
        address = self.client[0] if self.client else None
        if address is None or guards.trusts(address):
            self.pending_as = ""  # counted nowhere, but pending all the same
            return True
        already = self.pending.get(address, 0)
        if already >= guards.max_pending_per_address:
            server_warnings(self.server_state).warn(
                "http:too_many_pending",
                "connection from %s closed: too many requests still arriving",
                address,
            )
            self.transport.close()
            return False
        self.pending[address] = already + 1
        self.pending_as = address
        return True

    def _end_request(self) -> None:
        self.deadline = math.inf
        address, self.pending_as = self.pending_as, None
        if address:
            left = self.pending[address] - 1
            if left > 0:
                self.pending[address] = left
            else:
                del self.pending[address]

    def _allow(self, seconds: float) -> None:
        self.deadline = self.loop.time() + seconds


def uvicorn_options(host: str, port: int) -> dict[str, Any]:
    """How `switchboard serve` and `switchboard worker` run uvicorn: the guarded HTTP protocol,
    our WebSockets, and `X-Forwarded-For` believed only from SWITCHBOARD_TRUSTED_PROXIES
    (uvicorn alone believes it from 127.0.0.1, so any local client could pick its address)."""
    proxies = http_guards().trusted_proxies
    return {
        "host": host,
        "port": port,
        "log_level": "info",
        "access_log": False,
        "http": GuardedHttpProtocol,
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": [str(network) for network in proxies],
        **UVICORN_WEBSOCKETS,
    }


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
    options = uvicorn_options(host, port)
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
        http1_settings=HTTP1Settings(
            header_read_timeout=int(http_guards().header_timeout_seconds * 1000)
        ),
    ).serve()
