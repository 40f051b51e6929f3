"""The media plane: the worker's call sockets on a WebSocket listener of its own (picows).

Phone media streams (`/ws/twilio/{agent}`, `/ws/telnyx/{agent}`) and browser test calls
(`/ws/realtime/{agent}`) carry ~50 frames a second each way per call, all on the one event loop
every call's audio waits on. Served by the HTTP server, each frame went through its WebSocket
protocol, and through ASGI or a take-over of that protocol's internals. Here the frames are
parsed and framed by picows (Cython), used through its public API only: a frame arrives in a
callback and waits in the call's inbox; a frame to the phone is one write. `make
bench-socket-layers` prices each layer; docs/runtime.md says why this one.

The HTTP side (webhooks, health, metrics) stays on the worker's HTTP server: picows serves no
request bodies. The listener runs inside the worker app's lifespan, on its event loop:
`SWITCHBOARD_WORKER_MEDIA_PORT` (unset: the call sockets are served by the HTTP server through
Starlette, as under any ASGI server).

Bounds, as on the HTTP side: a handshake within `SWITCHBOARD_HTTP_HEADER_TIMEOUT_SECONDS`, a
message no larger than its kind of socket takes (a larger one closes the socket with 1009), and
a phone that sends faster than its call reads is held back by TCP (`INBOX_HIGH`), not buffered.
When the worker stops, a call goes on for the drain time, then ends as `worker_shutdown` and
closes its own socket; sockets that carry no call are closed at once with 1012.
"""

import asyncio
import contextlib
import logging
import re
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import picows

from switchboard_runtime.realtime_socket import wake
from switchboard_runtime.telephony import DIALECTS, Dialect, PhoneGone
from switchboard_runtime.worker.picows_messages import (
    BINARY,
    CLOSE,
    TEXT,
    MessageListener,
    connections_logger,
)
from switchboard_runtime.worker.settings import ProxyNetworks, is_trusted_proxy

logger = logging.getLogger(__name__)
connections = connections_logger(__name__)

# No socket of ours takes a larger message: picows refuses a frame past it from its header.
MAX_FRAME_BYTES = 64 * 1024
# Frames received and not yet read by the call before the listener stops reading the socket
# (TCP then holds the phone back); reading resumes once the call has caught up.
INBOX_HIGH = 64
INBOX_LOW = 16
# When the worker stops, how long a call has, past its drain time, to end itself before its
# socket is closed (1012, "service restart").
SHUTDOWN_GRACE_SECONDS = 5.0
# How long a close waits for the peer's close frame before the TCP connection is dropped.
CLOSE_TIMEOUT_SECONDS = 1.0
CLOSE_SERVICE_RESTART = 1012
RESTARTING = "the call worker is restarting"

# Sockets the media plane closed for breaking a bound, by close code (`/metrics`).
REFUSALS = {1009: "message_too_big", 1007: "invalid_text", 1002: "protocol_error"}
REFUSAL_REASONS = ("unknown_path", *REFUSALS.values())  # a handshake to another path: 403

PHONE_PATH = re.compile(r"/ws/(?P<provider>twilio|telnyx)/(?P<agent_id>[^/]+)")
BROWSER_PATH = re.compile(r"/ws/realtime/(?P<agent_id>[^/]+)")


@dataclass(frozen=True)
class FrameLimits:
    """The largest message each kind of socket may send."""

    media_stream_bytes: int  # Twilio and Telnyx: JSON frames well under 1 KiB
    browser_bytes: int  # binary PCM16 up to 1 s, or small JSON


@dataclass(frozen=True)
class Route:
    """What a socket's URL asked for: a phone stream (with its dialect) or a browser call."""

    agent_id: str
    dialect: Dialect | None  # None: a browser test call
    url_token: str | None
    max_message_bytes: int


# Serve a phone's stream: (socket, dialect, agent id, token from the URL or None).
PhoneHandler = Callable[["MediaSocket", Dialect, str, str | None], Awaitable[None]]
# Serve a browser test call: (socket, agent id).
BrowserHandler = Callable[["MediaSocket", str], Awaitable[None]]


def forwarded_client(peer: str, forwarded_for: str | None, trusts: Callable[[str], bool]) -> str:
    """The client's address: the peer's, or behind a trusted proxy the nearest address in
    `X-Forwarded-For` that no trusted proxy added (anyone can write the header itself)."""
    if not forwarded_for or not trusts(peer):
        return peer
    for address in reversed([part.strip() for part in forwarded_for.split(",")]):
        if not trusts(address):
            return address
    return peer


class MediaSocket(MessageListener):
    """One accepted call socket, as the worker's `CallSocket`: messages in through an inbox the
    call reads, frames out written at once."""

    def __init__(self, plane: "MediaPlane", route: Route) -> None:
        super().__init__(route.max_message_bytes)
        self.plane, self.route = plane, route
        self.client_host = ""
        self.inbox: deque[str | bytes] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.read_paused = False
        self.close_sent = False
        self.disconnected = False
        self.peer_closed: asyncio.Future[None] | None = None
        # Set by the call: how it ends when the worker stops, after how long.
        self.on_server_shutdown: Callable[[], Coroutine[Any, Any, None]] | None = None
        self.drain_seconds = 0.0
        self.ending: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.disconnected and not self.close_sent

    # CallSocket ---------------------------------------------------------------------------------

    async def receive(self) -> str | bytes | None:
        while not self.inbox:
            if not self.open:
                return None
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        if self.read_paused and len(self.inbox) <= INBOX_LOW and self.open:
            self.read_paused = False
            assert self.transport is not None
            self.transport.underlying_transport.resume_reading()
        return self.inbox.popleft()

    async def send_text(self, text: str) -> None:
        await self._send(TEXT, text.encode())

    def send_text_now(self, text: str) -> bool:
        """Write a frame without waiting: False (nothing written) when the phone is gone or not
        reading, where `send_text` would wait or raise."""
        if not self.open or not self.peer_reading:
            return False
        assert self.transport is not None
        self.transport.send(TEXT, text.encode())
        return True

    async def send_bytes(self, data: bytes) -> None:
        await self._send(BINARY, data)

    async def _send(self, kind: picows.WSMsgType, data: bytes) -> None:
        await self.wait_writable()  # the phone is not reading: wait, as the HTTP server would
        if not self.open:
            raise PhoneGone
        assert self.transport is not None
        self.transport.send(kind, data)

    async def close(self, code: int, reason: str) -> None:
        """Send our close, wait briefly for the peer's, then drop the connection. Never raises:
        the phone may already be gone."""
        transport = self.transport
        if transport is None or self.disconnected:
            return
        if not self.close_sent:
            self.close_sent = True
            self.peer_closed = asyncio.get_running_loop().create_future()
            transport.send_close(picows.WSCloseCode(code), reason.encode()[:123])
            wake(self.waiter)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                    await self.peer_closed
        transport.disconnect()

    def end_on_shutdown(
        self, end: Callable[[], Coroutine[Any, Any, None]], drain_seconds: float
    ) -> None:
        """When the worker stops, let the call go on for `drain_seconds`, then `end()` it."""
        self.on_server_shutdown, self.drain_seconds = end, drain_seconds

    # picows callbacks ---------------------------------------------------------------------------

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        self.transport = transport
        peer = transport.underlying_transport.get_extra_info("peername")
        forwarded = transport.request.headers.get("x-forwarded-for")
        self.client_host = forwarded_client(peer[0] if peer else "", forwarded, self.plane.trusts)
        self.plane.begin(self)

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        native = self.native
        if native is not None and native.relay(frame):
            return
        if self.read_data_frame(frame):
            return
        if frame.msg_type is CLOSE:
            if not self.close_sent:  # the peer closes first: answer with its code, then drop
                self.close_sent = True
                transport.send_close(frame.get_close_code())
            wake(self.peer_closed)
            transport.disconnect()
            wake(self.waiter)

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        self.disconnected = True
        wake(self.peer_closed)
        wake(self.waiter)
        self.release_writers()
        self.on_server_shutdown = None  # an ended call is not ended again at a stop

    # Inside -------------------------------------------------------------------------------------

    def on_message(self, message: str | bytes) -> None:
        if self.close_sent:  # past our close: only the peer's close matters now
            return
        if self.hand_over(message, self.inbox, self.waiter):
            return
        self.inbox.append(message)
        wake(self.waiter)
        if len(self.inbox) >= INBOX_HIGH and not self.read_paused:
            self.read_paused = True
            assert self.transport is not None
            self.transport.underlying_transport.pause_reading()

    def fail(self, code: int, reason: str) -> None:
        """A protocol violation: close with `code` and stop reading; the call sees a hang-up."""
        self.fragments = None
        if code in REFUSALS:
            self.plane.refused[REFUSALS[code]] += 1
        if self.transport is not None and not self.close_sent:
            self.close_sent = True
            self.transport.send_close(picows.WSCloseCode(code), reason.encode())
            self.transport.disconnect()
        wake(self.waiter)

    def end_for_shutdown(self) -> None:
        if self.on_server_shutdown is not None and self.open and self.ending is None:
            self.ending = asyncio.get_running_loop().create_task(self.on_server_shutdown())

    def close_for_restart(self) -> None:
        if self.open:
            self.fail(CLOSE_SERVICE_RESTART, RESTARTING)


class MediaPlane:
    """The listener and the sockets it carries; started and stopped by the worker's lifespan."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        limits: FrameLimits,
        handshake_timeout_seconds: float | None,
        trusted_proxies: ProxyNetworks,
        phone: PhoneHandler,
        browser: BrowserHandler,
    ) -> None:
        self.host, self.port = host, port
        self.limits = limits
        self.handshake_timeout_seconds = handshake_timeout_seconds
        self.trusted_proxies = trusted_proxies
        self.phone, self.browser = phone, browser
        self.server: asyncio.Server | None = None
        # Each socket's call, until the call is over: its phone may be gone while it still
        # reports, and a stop waits for that too.
        self.calls: dict[MediaSocket, asyncio.Task[None]] = {}
        # Sockets refused or closed for breaking a bound, by reason (`/metrics`).
        self.refused: Counter[str] = Counter()

    def trusts(self, address: str) -> bool:
        return is_trusted_proxy(address, self.trusted_proxies)

    @property
    def stopped(self) -> bool:
        """Started, and no longer listening."""
        return self.server is not None and not self.server.is_serving()

    @property
    def open_sockets(self) -> int:
        """Call sockets still connected (with a call or waiting for its token)."""
        return sum(1 for socket in self.calls if not socket.disconnected)

    @property
    def url(self) -> str:
        """`ws://host:port` of the running listener (its real port when configured as 0)."""
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> None:
        self.server = await picows.ws_create_server(
            self.route,
            self.host,
            self.port,
            max_frame_size=MAX_FRAME_BYTES,
            websocket_handshake_timeout=self.handshake_timeout_seconds,
            enable_auto_ping=False,
            logger_name=connections,
        )
        self.port = self.server.sockets[0].getsockname()[1]
        logger.info("media plane listening on %s", self.url)

    def route(
        self, request: picows.WSUpgradeRequest
    ) -> MediaSocket | picows.WSUpgradeResponseWithListener:
        """The socket for a handshake's path; any other path is refused with 403 (as the HTTP
        server refuses a WebSocket to a path it does not serve)."""
        path, _, query = request.path.decode("latin-1").partition("?")
        if phone := PHONE_PATH.fullmatch(path):
            tokens = parse_qs(query).get("token")  # Telnyx's stream URL carries the token
            route = Route(
                phone["agent_id"],
                DIALECTS[phone["provider"]],
                tokens[0] if tokens else None,
                self.limits.media_stream_bytes,
            )
            return MediaSocket(self, route)
        if browser := BROWSER_PATH.fullmatch(path):
            limit = self.limits.browser_bytes
            return MediaSocket(self, Route(browser["agent_id"], None, None, limit))
        self.refused["unknown_path"] += 1
        refusal = picows.WSUpgradeResponse.create_error_response(HTTPStatus.FORBIDDEN, b"forbidden")
        return picows.WSUpgradeResponseWithListener(refusal, None)

    def begin(self, socket: MediaSocket) -> None:
        if self.stopped:  # a handshake that finished after the listener closed
            socket.close_for_restart()
            return
        self.calls[socket] = asyncio.get_running_loop().create_task(self._serve(socket))

    def forget(self, socket: MediaSocket) -> None:
        self.calls.pop(socket, None)

    async def _serve(self, socket: MediaSocket) -> None:
        route = socket.route
        code, reason = 1000, "ended"
        try:
            if route.dialect is None:
                await self.browser(socket, route.agent_id)
            else:
                await self.phone(socket, route.dialect, route.agent_id, route.url_token)
        except Exception:
            logger.exception("call socket for agent %s failed", route.agent_id[:64])
            code, reason = 1011, "internal error"
        finally:
            await socket.close(code, reason)
            self.forget(socket)

    async def stop(self) -> None:
        """Stop listening; let each call go on for its drain time, then end it; close the rest."""
        if self.server is None:
            return
        self.server.close()
        loop = asyncio.get_running_loop()
        longest = 0.0
        for socket in list(self.calls):
            if socket.on_server_shutdown is None:
                socket.close_for_restart()
                continue
            loop.call_later(socket.drain_seconds, socket.end_for_shutdown)
            longest = max(longest, socket.drain_seconds)
        tasks = list(self.calls.values())
        if tasks:
            await asyncio.wait(tasks, timeout=longest + SHUTDOWN_GRACE_SECONDS)
        for socket in list(self.calls):
            socket.close_for_restart()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await self.server.wait_closed()
