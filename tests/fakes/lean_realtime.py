"""The fake xAI's realtime endpoint on a lean transport, for the runtime load benchmark.

Same conversation (`RealtimeConversation`: every event, quirk and script of the fake), carried by
picows on a stamped transport (tests/fakes/stamped_picows.py) instead of uvicorn + Starlette's
ASGI layers. The benchmark's fake xAI stands in for a remote service, so its cost is the
instrument's: under 200 calls the ASGI path needed about half a core and its event loop ran late
enough to read caller frames ~30 ms after they arrived, lag the benchmark then charged to the
worker. Caller frames are timed by when they reached the socket (tests/fakes/arrival_stamps.py),
however late the fake reads them. While the conversation waits for its next event, a stamped
caller append that starts or ends no speech is heard in the frame callback itself
(`RealtimeConversation.hear_at_once`), without waking the conversation's task: at 400 calls those
are nearly all of the fake's frames. The key check and HTTP endpoints stay on the fake's Starlette
app.
"""

import asyncio
from collections import deque
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import orjson
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from starlette.websockets import WebSocketDisconnect

from tests.fakes import stamped_picows
from tests.fakes.arrival_stamps import StampedServer, arrival_time
from tests.fakes.fake_xai import Connection, FakeXAIState, RealtimeConversation, bearer


class LeanRealtimeSocket(WSListener):
    """One realtime connection; to the conversation it is the WebSocket it talks through. Text
    frames queue for `receive_text`, which also sets `arrived_at`: when the text it returned
    reached the socket."""

    def __init__(self, state: FakeXAIState, record: Connection) -> None:
        self.state = state
        self.record = record
        self.ws: WSTransport | None = None
        self.inbox: deque[tuple[str, float]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.arrived_at = 0.0
        self.conversation: RealtimeConversation | None = None
        self.talking: asyncio.Task[None] | None = None

    # picows ------------------------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.ws = transport
        self.state.connections.append(self.record)
        conversation = RealtimeConversation(self.state, self, self.record, lambda: self.arrived_at)
        self.conversation = conversation
        self.talking = asyncio.get_running_loop().create_task(self._talk(conversation))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            arrived_at = arrival_time(transport.underlying_transport)
            text = frame.get_payload_as_utf8_text()
            if not self._heard_at_once(text, arrived_at):
                self.inbox.append((text, arrived_at))
                self._wake()
        elif frame.msg_type is WSMsgType.CLOSE:  # the peer is leaving
            stamped_picows.answer_close(transport, frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._wake()

    # What RealtimeConversation uses of a WebSocket ---------------------------------------------

    async def receive_text(self) -> str:
        while not self.inbox:
            if not stamped_picows.is_open(self.ws):
                raise WebSocketDisconnect(1006)
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        text, self.arrived_at = self.inbox.popleft()
        return text

    async def send_text(self, data: str) -> None:
        if not stamped_picows.is_open(self.ws):
            raise WebSocketDisconnect(1006)
        self.ws.send(WSMsgType.TEXT, data.encode())

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        if stamped_picows.is_open(self.ws):
            self.ws.send_close(WSCloseCode(code), (reason or "").encode())

    # -------------------------------------------------------------------------------------------

    def _heard_at_once(self, text: str, arrived_at: float) -> bool:
        """Whether the conversation, waiting for this very event, took it in the callback."""
        parked = not self.inbox and self.waiter is not None and not self.waiter.done()
        if not parked or self.conversation is None:
            return False
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            return False  # the conversation's own reading refuses it, in its turn
        self.arrived_at = arrived_at
        return self.conversation.hear_at_once(event)

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def _talk(self, conversation: RealtimeConversation) -> None:
        try:
            await conversation.run()
        finally:
            await self.close(1000, "")


async def serve_realtime(state: FakeXAIState, host: str, port: int) -> StampedServer:
    """Listen for realtime connections on host:port (ws://host:port/v1/realtime); caller frames
    are timed by when they reached the socket (tests/fakes/arrival_stamps.py)."""

    def answer(request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener:
        """Accept /v1/realtime with a valid key or secret, as the Starlette endpoint does."""
        state.upgrade_attempts += 1
        token = bearer(request.headers.get("Authorization", ""))
        target = urlsplit(request.path.decode())
        if target.path != "/v1/realtime" or token is None or not state.valid_secret(token):
            refusal = WSUpgradeResponse.create_error_response(
                HTTPStatus.FORBIDDEN, b"unauthorized\n"
            )
            return WSUpgradeResponseWithListener(refusal, None)
        model = parse_qs(target.query).get("model", [""])[0]
        return LeanRealtimeSocket(state, Connection(model=model, authorization=token))

    return await stamped_picows.serve(answer, host, port)
