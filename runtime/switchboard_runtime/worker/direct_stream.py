"""uvicorn's WebSocket protocol, able to hand a media stream's frames straight to the call.

Under ASGI every frame a phone sends goes through an `asyncio.Queue` as a message dict, the
reading is paused and resumed around it, and every frame the call sends the phone goes through
the server's `send` and Starlette's WebSocket. For a call that is ~50 frames a second each way,
all on the one event loop every call's audio waits on. A call that has accepted its stream
through the app (handshake, routing, call entry: all as before) takes the stream over with
`take_over()`; from then on frames arrive in a deque and go out with one write, and the close
goes back through ASGI as before. `make bench-phone-side` measures what that saves.

Served with `ws=DirectStreamProtocol` (`switchboard worker` does); under another server the
scope has no such extension and the call reads through Starlette as before.
"""

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.frames import Frame
from websockets.http11 import Request
from websockets.protocol import State

from switchboard_runtime.telephony import PhoneGone

# The scope extension a call finds `{"take_over": ...}` under (ASGI extensions are dicts).
DIRECT_STREAM = "switchboard.direct_stream"
# Where an app's lifespan state holds its `FrameLimits`: the largest message each kind of
# socket may send, enforced by the parser from the frame's header, before its payload is read.
FRAME_LIMITS = "switchboard.frame_limits"
# uvicorn's own default is 16 MiB; no socket of ours takes more than this.
MAX_FRAME_BYTES = 64 * 1024


@dataclass(frozen=True)
class FrameLimits:
    media_stream_bytes: int  # /ws/twilio/..., /ws/telnyx/...: JSON frames well under 1 KiB
    browser_bytes: int  # /ws/realtime/...: binary PCM16 up to 1 s, or small JSON

    def for_path(self, path: str) -> int:
        if path.startswith(("/ws/twilio/", "/ws/telnyx/")):
            return self.media_stream_bytes
        if path.startswith("/ws/realtime/"):
            return self.browser_bytes
        return MAX_FRAME_BYTES


# Frames received and not yet read by the call before the server stops reading the socket
# (TCP then holds the phone back); reading resumes once the call has caught up.
INBOX_HIGH = 64
INBOX_LOW = 16
# When the server stops, how long a taken-over call has to end itself before its stream is
# closed as uvicorn would (1012).
SHUTDOWN_GRACE_SECONDS = 5.0


class DirectStreamProtocol(WebSocketsSansIOProtocol):
    """uvicorn's Sans-I/O WebSocket protocol, whose stream a call can take over."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.phone: DirectPhone | None = None

    def handle_connect(self, event: Request) -> None:
        limits: FrameLimits | None = self.app_state.get(FRAME_LIMITS)
        if limits is not None:
            self.conn.max_message_size = min(
                limits.for_path(event.path.split("?", 1)[0]), MAX_FRAME_BYTES
            )
        super().handle_connect(event)
        if self.response.status_code == 101:  # the app now decides: accept, refuse or route
            extensions = self.scope.setdefault("extensions", {})
            assert extensions is not None
            extensions[DIRECT_STREAM] = {"take_over": self.take_over}

    def take_over(self) -> "DirectPhone":
        """The stream as a `PhoneSocket`: frames queued for ASGI first, in order, then the rest."""
        if self.phone is None:
            self.phone = DirectPhone(self)
            while not self.queue.empty():
                message = self.queue.get_nowait()
                if message["type"] != "websocket.receive":  # a disconnect: nothing follows
                    break
                text = message.get("text")
                self.phone.inbox.append(text if text is not None else message.get("bytes") or b"")
            self.phone.resume_reading_if_caught_up()
        return self.phone

    def send_receive_event_to_app(self) -> None:
        if self.phone is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:  # past our close: only the peer's close reply matters now
            return
        if self.curr_msg_data_type == "text":
            try:
                self.phone.deliver(data.decode())
            except UnicodeDecodeError:
                self.conn.send_close(1007)
                self.handle_parser_exception()
        else:
            self.phone.deliver(bytes(data))

    def shutdown(self) -> None:
        """The server is stopping (SIGTERM). uvicorn would close the stream with 1012, which the
        call would take for the caller hanging up. A taken-over call goes on for its drain
        time (uvicorn waits for open connections), is then told, ends as a call (its own
        reason, its report) and closes the stream itself."""
        phone = self.phone
        if phone is None or phone.on_server_shutdown is None or not phone.open:
            super().shutdown()
            return
        self.loop.call_later(phone.drain_seconds, phone.end_for_shutdown)
        self.loop.call_later(phone.drain_seconds + SHUTDOWN_GRACE_SECONDS, self._shut_down_if_open)

    def _shut_down_if_open(self) -> None:
        if not self.transport.is_closing():
            super().shutdown()

    def handle_close(self, event: Frame) -> None:
        super().handle_close(event)
        if self.phone is not None:
            self.phone.wake()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        phone, self.phone = self.phone, None
        if phone is not None:
            phone.wake()
            phone.on_server_shutdown = None
        # The stream and its phone, and the scope's take-over method, refer back to this
        # protocol: left as they are, an ended call (its session, its transcripts) would stay
        # in memory until the collector's next full pass, and make that pass longer.
        extensions = self.scope.get("extensions") if hasattr(self, "scope") else None
        if extensions:
            extensions.pop(DIRECT_STREAM, None)


class DirectPhone:
    """A taken-over stream, as the bridge's `PhoneSocket`. Closing it stays with the app's
    WebSocket (through ASGI), so the app's view of the connection stays right."""

    def __init__(self, stream: DirectStreamProtocol) -> None:
        self.stream = stream
        self.inbox: deque[str | bytes] = deque()
        self.waiter: asyncio.Future[None] | None = None
        # Set by the call: how it ends when the server stops, after how long (and the task
        # ending it).
        self.on_server_shutdown: Callable[[], Coroutine[Any, Any, None]] | None = None
        self.drain_seconds = 0.0
        self.ending: asyncio.Task[None] | None = None

    @property
    def open(self) -> bool:
        stream = self.stream
        return (
            stream.conn.state is State.OPEN
            and not stream.close_sent
            and not stream.transport.is_closing()
        )

    async def receive(self) -> str | bytes | None:
        while not self.inbox:
            if not self.open:
                return None
            self.waiter = self.stream.loop.create_future()
            await self.waiter
        self.resume_reading_if_caught_up()
        return self.inbox.popleft()

    async def send_text(self, text: str) -> None:
        await self._send(text.encode(), text=True)

    async def send_bytes(self, data: bytes) -> None:
        await self._send(data, text=False)

    async def _send(self, data: bytes, *, text: bool) -> None:
        stream = self.stream
        if not stream.writable.is_set():  # the phone is not reading: wait, as ASGI's send does
            await stream.writable.wait()
        if not self.open:
            raise PhoneGone
        if text:
            stream.conn.send_text(data)
        else:
            stream.conn.send_binary(data)
        stream.transport.write(b"".join(stream.conn.data_to_send()))

    # Called by the protocol --------------------------------------------------------------------

    def deliver(self, frame: str | bytes) -> None:
        self.inbox.append(frame)
        self.wake()
        stream = self.stream
        if len(self.inbox) >= INBOX_HIGH and not stream.read_paused:
            stream.read_paused = True
            stream.transport.pause_reading()

    def resume_reading_if_caught_up(self) -> None:
        stream = self.stream
        if stream.read_paused and len(self.inbox) <= INBOX_LOW and not stream.close_sent:
            stream.read_paused = False
            stream.transport.resume_reading()

    def end_for_shutdown(self) -> None:
        if self.on_server_shutdown is not None and self.open and self.ending is None:
            self.ending = self.stream.loop.create_task(self.on_server_shutdown())

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
