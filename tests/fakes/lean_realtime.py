"""The fake xAI's realtime endpoint on a lean transport, for the runtime load benchmark.

Same conversation (`RealtimeConversation`: every event, quirk and script of the fake), carried by
websockets' own Sans-I/O server protocol straight from an asyncio protocol
(`tests/fakes/sansio_server.py`) instead of uvicorn + Starlette's ASGI layers. The benchmark's
fake xAI stands in for a remote service, so its cost is the instrument's: under 200 calls the
ASGI path needed about half a core and its event loop ran late enough to read caller frames
~30 ms after they arrived, lag the benchmark then charged to the worker. Caller frames are timed
by when they reached the socket (tests/fakes/arrival_stamps.py), however late the fake reads
them. The key check and HTTP endpoints stay on the fake's Starlette app.
"""

import asyncio
from urllib.parse import parse_qs, urlsplit

from starlette.websockets import WebSocketDisconnect
from websockets.http11 import Request
from websockets.protocol import State

from tests.fakes.arrival_stamps import StampedServer, serve_stamped
from tests.fakes.fake_xai import Connection, FakeXAIState, RealtimeConversation, bearer
from tests.fakes.sansio_server import SansIOServerSocket


class LeanRealtimeSocket(SansIOServerSocket):
    """One realtime connection; to the conversation it is the WebSocket it talks through."""

    def __init__(self, state: FakeXAIState) -> None:
        super().__init__(max_size=2**22)
        self.state = state
        self.conversation: asyncio.Task[None] | None = None

    def on_request(self, request: Request) -> None:
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
        conversation = RealtimeConversation(self.state, self, record, lambda: self.arrived_at)
        self.conversation = asyncio.get_running_loop().create_task(self._talk(conversation))

    # What RealtimeConversation uses of a WebSocket ---------------------------------------------

    async def receive_text(self) -> str:
        text = await self.next_text()
        if text is None:
            raise WebSocketDisconnect(1006)
        return text

    async def send_text(self, data: str) -> None:
        if not self.write_text(data):
            raise WebSocketDisconnect(1006)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.write_close(code, reason or "")

    # -------------------------------------------------------------------------------------------

    async def _talk(self, conversation: RealtimeConversation) -> None:
        try:
            await conversation.run()
        finally:
            await self.close(1000, "")


async def serve_realtime(state: FakeXAIState, host: str, port: int) -> StampedServer:
    """Listen for realtime connections on host:port (ws://host:port/v1/realtime); caller frames
    are timed by when they reached the socket (tests/fakes/arrival_stamps.py)."""
    return await serve_stamped(lambda: LeanRealtimeSocket(state), host, port)
