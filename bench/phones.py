"""The benchmark's phones: WebSocket clients cheap enough to run 400 of on one shared core.

They stand in for Twilio's media servers, so their own cost is the instrument's, not the worker's:
with `websockets`' asyncio client 200 phones needed ~0.45 of a core and their event loop ran late
often enough to show up as the worker's lag, and on websockets' Sans-I/O protocol 400 phones still
needed ~0.45 and streamed only 75-84 % of the audio they were asked for. These are picows clients
(framing, masking and writes in C: 20-24 us a frame sent where the Sans-I/O ones took 28-32, most of
it now the `send` itself) on a stamped transport (tests/fakes/stamped_picows.py): a text
frame is handed to a callback as it is parsed, with when it reached the phone's socket (the
kernel's receive time: tests/fakes/arrival_stamps.py), so a phone that reads late does not charge
its lateness to the worker.
"""

import asyncio
from collections.abc import Callable

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from tests.fakes import stamped_picows
from tests.fakes.arrival_stamps import arrival_time

# A text frame and when it reached the socket (time.time() clock).
OnText = Callable[[str, float], None]
CLOSE_TIMEOUT = 5.0


class LeanPhone(WSListener):
    """One media stream: `send` text frames; every text frame received goes to `on_text`."""

    def __init__(self, on_text: OnText) -> None:
        self.on_text = on_text
        self.ws: WSTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.ws = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            arrived_at = arrival_time(transport.underlying_transport)
            self.on_text(frame.get_payload_as_utf8_text(), arrived_at)
        elif frame.msg_type is WSMsgType.CLOSE:  # the bridge hung up
            stamped_picows.answer_close(transport, frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, text: str) -> None:
        if stamped_picows.is_open(self.ws):
            self.ws.send(WSMsgType.TEXT, text.encode())

    async def close(self) -> None:
        """Close as Twilio does (1000), and wait for the bridge to answer and hang up."""
        ws = self.ws
        if ws is None or ws.is_disconnected:
            return
        if not ws.is_close_frame_sent:
            ws.send_close(WSCloseCode.OK)
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), CLOSE_TIMEOUT)
        except TimeoutError:
            ws.disconnect(graceful=False)


async def open_phone(url: str, on_text: OnText) -> LeanPhone:
    """Connect and finish the opening handshake (ws:// on loopback only)."""
    _, phone = await asyncio.wait_for(
        stamped_picows.connect(url, lambda: LeanPhone(on_text)), stamped_picows.HANDSHAKE_TIMEOUT
    )
    return phone
