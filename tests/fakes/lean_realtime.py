"""The fake xAI's realtime endpoint on a lean transport, for the runtime load benchmark.

Same conversation (`RealtimeConversation`: every event, quirk and script of the fake), carried by
websockets' own Sans-I/O server protocol straight from an asyncio protocol instead of uvicorn +
Starlette's ASGI layers. The benchmark's fake xAI stands in for a remote service, so its cost is
the instrument's: under 200 calls the ASGI path needed about half a core and its event loop ran
late enough to read caller frames ~30 ms after they arrived, lag the benchmark then charged to the
worker. The key check and HTTP endpoints stay on the fake's Starlette app.
"""

import asyncio
import contextlib
from collections import deque
from typing import cast
from urllib.parse import parse_qs, urlsplit

from starlette.websockets import WebSocketDisconnect
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from tests.fakes.fake_xai import Connection, FakeXAIState, RealtimeConversation, bearer


class LeanRealtimeSocket(asyncio.Protocol):
    """One realtime connection; to the conversation it is the WebSocket it talks through."""

    def __init__(self, state: FakeXAIState) -> None:
        self.state = state
        self.protocol = ServerProtocol(max_size=2**22)
        self.transport: asyncio.Transport | None = None
        self.inbox: deque[str] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.conversation: asyncio.Task[None] | None = None

    # asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.inbox.append(bytes(event.data).decode())
                self._wake()
        self._flush()
        if self.protocol.state is State.CLOSED:
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        with contextlib.suppress(EOFError):
            self.protocol.receive_eof()
        self._wake()

    # What RealtimeConversation uses of a WebSocket ---------------------------------------------

    async def receive_text(self) -> str:
        while not self.inbox:
            if self.protocol.state is not State.OPEN:
                raise WebSocketDisconnect(1006)
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.inbox.popleft()

    async def send_text(self, data: str) -> None:
        if self.protocol.state is not State.OPEN:
            raise WebSocketDisconnect(1006)
        self.protocol.send_text(data.encode())
        self._flush()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason or "")
            self._flush()

    # -------------------------------------------------------------------------------------------

    def _handshake(self, request: Request) -> None:
        """Accept /v1/realtime with a valid key or secret, as the Starlette endpoint does."""
        self.state.upgrade_attempts += 1
        token = bearer(request.headers.get("Authorization", ""))
        target = urlsplit(request.path)
        if target.path != "/v1/realtime" or token is None or not self.state.valid_secret(token):
            self.protocol.send_response(self.protocol.reject(403, "unauthorized\n"))
            return
        self.protocol.send_response(self.protocol.accept(request))
        if self.protocol.state is not State.OPEN:
            return  # not a WebSocket upgrade: the protocol answered 400
        model = parse_qs(target.query).get("model", [""])[0]
        record = Connection(model=model, authorization=token)
        self.state.connections.append(record)
        conversation = RealtimeConversation(self.state, self, record)
        self.conversation = asyncio.get_running_loop().create_task(self._talk(conversation))

    async def _talk(self, conversation: RealtimeConversation) -> None:
        try:
            await conversation.run()
        finally:
            await self.close(1000, "")

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


async def serve_realtime(state: FakeXAIState, host: str, port: int) -> asyncio.Server:
    """Listen for realtime connections on host:port (ws://host:port/v1/realtime)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: LeanRealtimeSocket(state), host, port)
