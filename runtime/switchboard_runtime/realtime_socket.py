"""The WebSocket to xAI's realtime API, lean enough for 50 frames a second per call.

A worker carries two WebSockets per call and forwards every 20 ms frame from one to the other,
so per-frame overhead is what limits calls per core. websockets' asyncio connection spends a
good part of each send on its general machinery (an async context manager, a lock, a drain)
and each receive on a reader queue. This socket drives the same library's Sans-I/O protocol
(handshake, framing, masking, ping answers, close handshake, size limits: all websockets')
straight from an asyncio protocol: a send frames and writes at once; a received text frame is
queued for the session's reader, nothing more.

It behaves as the session used websockets' `ClientConnection`: `send`, `async for` over text
messages (ends on a normal close, raises `ConnectionClosedError` on any other), `close`,
`close_reason`; opening raises `InvalidStatus` for a refused upgrade, `TimeoutError` past the
open timeout, `OSError` when the host cannot be reached. Behind an HTTP(S) proxy (the usual
environment variables) the library's own client is used, which knows how to tunnel.
"""

import asyncio
import contextlib
import functools
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol, cast, runtime_checkable

from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.proxy import get_proxy
from websockets.uri import parse_uri

CLOSE_TIMEOUT_SECONDS = 10.0


@functools.cache
def default_tls() -> ssl.SSLContext:
    """The system's default TLS settings, built once: building them costs milliseconds."""
    return ssl.create_default_context()


class RealtimeSocket(Protocol):
    """What a session needs of its xAI socket (websockets' ClientConnection has it too)."""

    async def send(self, message: str) -> None: ...

    def __aiter__(self) -> AsyncIterator[str | bytes]: ...

    async def close(self) -> None: ...

    @property
    def close_reason(self) -> str | None: ...


@runtime_checkable
class CallbackRelay(Protocol):
    """A socket that hands a message over inside its frame callback (`take_now`, while its
    reader is parked) and writes without waiting when it can (`send_now`): the worker's."""

    take_now: Callable[[str | bytes], bool] | None

    def send_now(self, message: str) -> bool: ...


class SocketOpener(Protocol):
    """Opens a session's socket to xAI (`open_realtime_socket`, or the worker's own)."""

    async def __call__(
        self,
        url: str,
        *,
        headers: dict[str, str],
        open_timeout: float,
        max_size: int,
        tls: ssl.SSLContext | None = None,
    ) -> RealtimeSocket: ...


def wake(waiter: asyncio.Future[None] | None) -> None:
    """Wake whoever waits on `waiter`, if anybody still does."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class MessagesUntilClosed:
    """`async for` over a socket's messages as websockets' connection gives them: the
    iteration ends at a normal close and raises `ConnectionClosedError` at any other."""

    async def recv(self) -> str | bytes:
        raise NotImplementedError

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        try:
            while True:
                yield await self.recv()
        except ConnectionClosedOK:
            return


class LeanRealtimeSocket(MessagesUntilClosed, asyncio.Protocol):
    def __init__(self, url: str, headers: dict[str, str], max_size: int) -> None:
        self.protocol = ClientProtocol(parse_uri(url), max_size=max_size)
        self.headers = headers
        self.transport: asyncio.Transport | None = None
        self.messages: deque[str | bytes] = deque()
        self.fragments: list[Frame] = []  # a message sent in several frames, until its last
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.readable: asyncio.Future[None] | None = None  # the reader waits for a message
        self.writable: asyncio.Future[None] | None = None  # set while the transport is full

    # asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        request = self.protocol.connect()
        for name, value in self.headers.items():
            request.headers[name] = value
        self.protocol.send_request(request)
        self._write_out()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if self.protocol.handshake_exc is None:
                    self.opened.set_result(None)
                else:
                    self.opened.set_exception(self.protocol.handshake_exc)
            elif isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.BINARY):
                self.fragments = [event]
                self._message_if_whole()
            elif isinstance(event, Frame) and event.opcode is Opcode.CONT and self.fragments:
                self.fragments.append(event)
                self._message_if_whole()
        self._write_out()
        if self.protocol.state is State.CLOSED:
            wake(self.readable)

    def connection_lost(self, exc: Exception | None) -> None:
        with contextlib.suppress(EOFError):  # the close handshake may have ended it already
            self.protocol.receive_eof()
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        wake(self.lost)
        wake(self.readable)
        wake(self.writable)

    def pause_writing(self) -> None:
        self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        wake(self.writable)
        self.writable = None

    # What the session uses ---------------------------------------------------------------------

    async def send(self, message: str) -> None:
        if self.protocol.state is not State.OPEN:
            raise self._closed()
        self.protocol.send_text(message.encode())
        self._write_out()
        if self.writable is not None:  # xAI is not reading: wait rather than buffer forever
            await asyncio.shield(self.writable)

    async def recv(self) -> str | bytes:
        while not self.messages:
            if self.protocol.state is State.CLOSED or self.lost.done():
                raise self._closed()
            self.readable = asyncio.get_running_loop().create_future()
            await self.readable
        return self.messages.popleft()

    async def close(self) -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self._write_out()
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), CLOSE_TIMEOUT_SECONDS)
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()

    @property
    def close_reason(self) -> str | None:
        return self.protocol.close_reason

    # -------------------------------------------------------------------------------------------

    def _message_if_whole(self) -> None:
        if not self.fragments[-1].fin:
            return
        data = b"".join(bytes(frame.data) for frame in self.fragments)
        text = self.fragments[0].opcode is Opcode.TEXT
        self.fragments = []
        self.messages.append(data.decode() if text else data)
        wake(self.readable)

    def _closed(self) -> ConnectionClosed:
        if self.protocol.state is State.CLOSED:
            return self.protocol.close_exc
        return ConnectionClosed(self.protocol.close_rcvd, self.protocol.close_sent)

    def _write_out(self) -> None:
        assert self.transport is not None
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():  # the close handshake is over: half-close
                self.transport.write_eof()


async def open_realtime_socket(
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
    context = (tls or default_tls()) if uri.secure else None
    if get_proxy(uri) is not None:
        return await connect(
            url,
            additional_headers=headers,
            open_timeout=open_timeout,
            max_size=max_size,
            ssl=context,
            ping_interval=None,
            compression=None,
        )
    loop = asyncio.get_running_loop()

    async def opened() -> LeanRealtimeSocket:
        _, socket = await loop.create_connection(
            lambda: LeanRealtimeSocket(url, headers, max_size),
            uri.host,
            uri.port,
            ssl=context,
            server_hostname=uri.host if uri.secure else None,
        )
        try:
            await socket.opened
        except BaseException:
            if socket.transport is not None:
                socket.transport.abort()
            raise
        return socket

    return await asyncio.wait_for(opened(), open_timeout)
