"""A WebSocket server connection without ASGI: websockets' Sans-I/O server protocol (handshake,
framing, close handshake, size limits: all the library's) driven straight from an asyncio
protocol. The benchmarks' stand-ins use it where uvicorn + Starlette would cost the instrument
more CPU than the thing measured, and as a layer to price: the `lean` server of
bench/phone_side.py and the `websockets-sansio` row of bench/socket_layers.py (the fake xAI's lean
realtime endpoint used it until it moved to picows: tests/fakes/stamped_picows.py).
"""

import asyncio
import contextlib
from collections import deque
from typing import cast

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from tests.fakes.arrival_stamps import arrival_time


class SansIOServerSocket(asyncio.Protocol):
    """One connection. A subclass answers the opening request (`on_request`, with
    `self.protocol.accept` or `reject`); text frames then queue for `next_text`, which also sets
    `arrived_at`: when the text it returned reached the socket (tests/fakes/arrival_stamps.py)."""

    def __init__(self, max_size: int = 2**20) -> None:
        self.protocol = ServerProtocol(max_size=max_size)
        self.transport: asyncio.Transport | None = None
        self.inbox: deque[tuple[str, float]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.arrived_at = 0.0

    def on_request(self, request: Request) -> None:
        raise NotImplementedError

    # asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        arrived_at = arrival_time(self.transport)
        for event in self.protocol.events_received():
            if isinstance(event, Request):
                self.on_request(event)
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.inbox.append((bytes(event.data).decode(), arrived_at))
                self._wake()
        self._flush()
        if self.protocol.state is State.CLOSED:
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        with contextlib.suppress(EOFError):
            self.protocol.receive_eof()
        self._wake()

    # -------------------------------------------------------------------------------------------

    async def next_text(self) -> str | None:
        """The next text message; None once the connection is no longer open and none is left."""
        while not self.inbox:
            if self.protocol.state is not State.OPEN:
                return None
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        text, self.arrived_at = self.inbox.popleft()
        return text

    def write_text(self, text: str) -> bool:
        """Send a text frame now; False when the connection is no longer open."""
        if self.protocol.state is not State.OPEN:
            return False
        self.protocol.send_text(text.encode())
        self._flush()
        return True

    def write_close(self, code: int = 1000, reason: str = "") -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _flush(self) -> None:
        assert self.transport is not None
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            else:  # the close handshake is over: a server closes the TCP connection
                self.transport.close()
