"""The benchmark's phones: WebSocket clients cheap enough to run 200 of on one shared core.

They stand in for Twilio's media servers, so their own cost is the instrument's, not the worker's:
with `websockets`' asyncio client 200 phones needed ~0.45 of a core and their event loop ran
late often enough to show up as the worker's lag. This client drives websockets' own Sans-I/O
protocol (handshake, framing, masking, pings and close all stay the library's) straight from an
asyncio protocol: no reader task, no message queue, no lock per send; a text frame is handed to
a callback as it is parsed, with when it reached the phone's socket (the kernel's receive time:
tests/fakes/arrival_stamps.py), so a phone that reads late does not charge its lateness to the
worker.
"""

import asyncio
import contextlib
from collections.abc import Callable
from typing import cast

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.fakes.arrival_stamps import arrival_time, connect_stamped

# A text frame and when it reached the socket (time.time() clock).
OnText = Callable[[str, float], None]


class LeanPhone(asyncio.Protocol):
    """One media stream: `send` text frames; every text frame received goes to `on_text`."""

    def __init__(self, url: str, on_text: OnText) -> None:
        self.protocol = ClientProtocol(parse_uri(url), max_size=2**20)
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.open: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        arrived_at = arrival_time(self.transport)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if self.protocol.handshake_exc is not None:
                    self.open.set_exception(self.protocol.handshake_exc)
                else:
                    self.open.set_result(None)
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.on_text(bytes(event.data).decode(), arrived_at)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        with contextlib.suppress(EOFError):  # the close handshake may have ended it already
            self.protocol.receive_eof()
        if not self.open.done():
            self.open.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, text: str) -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_text(text.encode())
            self._flush()

    async def close(self) -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), 5)
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()

    def _flush(self) -> None:
        assert self.transport is not None
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            else:  # the protocol is done with the connection: half-close, then close
                if self.transport.can_write_eof():
                    self.transport.write_eof()
        if self.protocol.close_expected() and self.protocol.state is State.CLOSED:
            self.transport.close()


async def open_phone(url: str, on_text: OnText) -> LeanPhone:
    """Connect and finish the opening handshake (ws:// on loopback only)."""
    uri = parse_uri(url)
    _, phone = await connect_stamped(lambda: LeanPhone(url, on_text), uri.host, uri.port)
    await asyncio.wait_for(phone.open, 10)
    return phone
