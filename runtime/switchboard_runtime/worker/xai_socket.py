"""The worker's socket to xAI's realtime API, on picows like its media plane.

A worker relays every 20 ms frame of every call to xAI and back, so the xAI side costs as much
per frame as the phone side. The bare runtime's socket (`realtime_socket.LeanRealtimeSocket`)
drives websockets' Sans-I/O protocol; this one is picows' client (Cython framing and masking),
through its public API. The worker hands it to every session it runs (`open_socket`).

It keeps the session's contract, the one websockets' `ClientConnection` set: `send`, `async
for` over messages (ends on a normal close, raises `ConnectionClosedError` on any other),
`close`, `close_reason`; opening raises websockets' `InvalidStatus` for a refused upgrade,
`TimeoutError` past the open timeout, an `OSError` when the host cannot be reached or the
handshake fails otherwise. Behind an HTTP(S) proxy (the usual environment variables) the bare
runtime's socket is used, which knows how to tunnel.
"""

import asyncio
import logging
import ssl
from collections import deque

import picows
from websockets.datastructures import Headers
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidStatus,
)
from websockets.frames import Close
from websockets.http11 import Response
from websockets.proxy import get_proxy
from websockets.uri import parse_uri

from switchboard_runtime.realtime_socket import (
    CLOSE_TIMEOUT_SECONDS,
    MessagesUntilClosed,
    RealtimeSocket,
    default_tls,
    open_realtime_socket,
    wake,
)
from switchboard_runtime.worker.picows_messages import (
    CLOSE,
    TEXT,
    MessageListener,
    connections_logger,
)

logger = logging.getLogger(__name__)
connections = connections_logger(__name__)

NORMAL_CLOSURES = (1000, 1001)


class PicowsRealtimeSocket(MessagesUntilClosed, MessageListener):
    def __init__(self, max_size: int) -> None:
        super().__init__(max_size)
        self.messages: deque[str | bytes] = deque()
        self.close_rcvd: Close | None = None
        self.close_sent: Close | None = None
        self.rcvd_then_sent: bool | None = None  # with both close frames: which came first
        self.disconnected = False
        self.readable: asyncio.Future[None] | None = None
        self.lost = asyncio.get_running_loop().create_future()

    # picows callbacks ---------------------------------------------------------------------------

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        native = self.native
        if native is not None and native.relay(frame):
            return
        if self.read_data_frame(frame):
            return
        if frame.msg_type is CLOSE:
            code = frame.get_close_code()
            reason = (frame.get_close_message() or b"").decode(errors="replace")
            self.close_rcvd = Close(code.value, reason)
            self.rcvd_then_sent = self.close_sent is None
            if self.close_sent is None:  # xAI closes first: answer with its code
                self.close_sent = Close(code.value, "")
                transport.send_close(code)
            transport.disconnect()
            wake(self.readable)

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        self.disconnected = True
        wake(self.lost)
        wake(self.readable)
        self.release_writers()

    # What the session uses ------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.disconnected and self.close_sent is None

    async def send(self, message: str) -> None:
        if not self.open:
            raise self._closed()
        assert self.transport is not None
        self.transport.send(TEXT, message.encode())
        await self.wait_writable()  # xAI is not reading: wait rather than buffer forever

    def send_now(self, message: str) -> bool:
        """Write a message without waiting: False (nothing written) when the socket is closing
        or xAI is not reading, where `send` would raise or wait."""
        if not self.open or not self.peer_reading:
            return False
        assert self.transport is not None
        self.transport.send(TEXT, message.encode())
        return True

    async def recv(self) -> str | bytes:
        while not self.messages:
            if self.disconnected or self.close_rcvd is not None:
                raise self._closed()
            self.readable = asyncio.get_running_loop().create_future()
            await self.readable
        return self.messages.popleft()

    async def close(self) -> None:
        if self.transport is None:
            return
        if self.close_sent is None and not self.disconnected:
            self.close_sent = Close(1000, "")
            self.transport.send_close(picows.WSCloseCode.OK)
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), CLOSE_TIMEOUT_SECONDS)
        except TimeoutError:
            self.transport.disconnect()

    @property
    def close_reason(self) -> str | None:
        return self.close_rcvd.reason if self.close_rcvd else None

    # Inside -------------------------------------------------------------------------------------

    def on_message(self, message: str | bytes) -> None:
        if self.hand_over(message, self.messages, self.readable):
            return
        self.messages.append(message)
        wake(self.readable)

    def fail(self, code: int, reason: str) -> None:
        self.fragments = None
        if self.transport is not None and self.close_sent is None:
            self.close_sent = Close(code, reason)
            self.transport.send_close(picows.WSCloseCode(code), reason.encode())
            self.transport.disconnect()
        wake(self.readable)

    def _closed(self) -> ConnectionClosed:
        rcvd, sent = self.close_rcvd, self.close_sent
        order = self.rcvd_then_sent if rcvd is not None and sent is not None else None
        normal = rcvd is not None and rcvd.code in NORMAL_CLOSURES
        if normal and (sent is None or sent.code in NORMAL_CLOSURES):
            return ConnectionClosedOK(rcvd, sent, order)
        return ConnectionClosedError(rcvd, sent, order)


async def open_picows_realtime_socket(
    url: str,
    *,
    headers: dict[str, str],
    open_timeout: float,
    max_size: int,
    tls: ssl.SSLContext | None = None,
) -> RealtimeSocket:
    """Connect and finish the opening handshake within `open_timeout` seconds; wss:// verifies
    the server's certificate and name against the system's CAs (or `tls`' settings)."""
    uri = parse_uri(url)
    if get_proxy(uri) is not None:
        return await open_realtime_socket(
            url, headers=headers, open_timeout=open_timeout, max_size=max_size, tls=tls
        )
    try:
        async with asyncio.timeout(open_timeout):
            _, socket = await picows.ws_connect(
                lambda: PicowsRealtimeSocket(max_size),
                url,
                ssl_context=(tls or default_tls()) if uri.secure else None,
                websocket_handshake_timeout=open_timeout,
                extra_headers=headers,
                enable_auto_ping=False,
                max_frame_size=max_size,
                max_redirects=0,
                logger_name=connections,
            )
    except picows.WSInvalidStatusError as exc:
        raise InvalidStatus(_response_of(exc)) from exc
    except picows.WSError as exc:
        raise ConnectionError(f"the realtime handshake failed: {exc}") from exc
    assert isinstance(socket, PicowsRealtimeSocket)
    return socket


def _response_of(exc: picows.WSInvalidStatusError) -> Response:
    """websockets' view of the refused upgrade: its status is what the session reads."""
    status = int(exc.response.status) if exc.response is not None else 0
    return Response(status, "", Headers(), bytes(exc.raw_body or b""))
