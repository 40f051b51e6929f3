"""What the worker's two picows sockets (a call's, on the media plane; the call's xAI socket)
share: picows hands over frames, both want messages.

`MessageListener` reassembles a message sent in fragments (bounded as a whole: each fragment
may be small and their sum not), refuses text that is not UTF-8 (1007), an oversized message
(1009) and out-of-order fragments (1002), and keeps the peer's back-pressure: while picows says
the peer is not reading, `wait_writable` waits instead of buffering without bound.
"""

import asyncio
import logging
from collections.abc import Callable, Sized
from typing import Protocol

import picows

from switchboard_runtime.logging import RepeatedWarnings

TEXT, BINARY = picows.WSMsgType.TEXT, picows.WSMsgType.BINARY
CONTINUATION, CLOSE = picows.WSMsgType.CONTINUATION, picows.WSMsgType.CLOSE


# How picows begins the line it writes at ERROR when a peer's frame breaks the protocol (or is
# over the frame limit): it closes that socket itself.
PEER_FAULT = "WS parser error"


class PeerFaults(logging.Handler):
    """picows says each frame a peer gets wrong at ERROR, once per socket: anyone who can open
    a socket could write ERROR lines as fast as they can connect. Here those become repeated
    warnings (at most one a minute, with how many were held back); anything else picows says is
    passed on to `target` as it is."""

    def __init__(self, target: logging.Logger, warnings: RepeatedWarnings | None = None) -> None:
        super().__init__()
        self.target = target
        self.warnings = warnings or RepeatedWarnings(target)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.startswith(PEER_FAULT):
            self.target.handle(record)
            return
        self.warnings.warn(
            "peer_broke_protocol",
            "closed a socket whose peer broke the WebSocket protocol: %s",
            message.removeprefix(PEER_FAULT).strip(" :"),
        )


def connections_logger(module: str) -> logging.Logger:
    """The logger picows gets: it says every connection and disconnection at INFO, so its
    child logger is kept to warnings unless configured otherwise; what a peer gets wrong is
    said through `PeerFaults` (its lines go to `module`'s logger)."""
    chatty = logging.getLogger(f"{module}.connections")
    if chatty.level == logging.NOTSET:
        chatty.setLevel(logging.WARNING)
    if not any(isinstance(handler, PeerFaults) for handler in chatty.handlers):
        chatty.addHandler(PeerFaults(logging.getLogger(module)))
        chatty.propagate = False
    return chatty


class FrameRelay(Protocol):
    """Takes a frame in compiled code when it can do all the Python path would do with it at
    once (True); else does nothing (False). `worker/frame_relay.pyx`, set while a call is
    bridged (`worker/native_relays.py`)."""

    def relay(self, frame: picows.WSFrame) -> bool: ...


class MessageListener(picows.WSListener):
    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self.transport: picows.WSTransport | None = None
        self.fragments: bytearray | None = None  # a message arriving in several frames
        self.fragments_text = False
        self.writable: asyncio.Event | None = None  # set while the peer takes our writes
        # Set by whoever reads this socket: takes a message inside picows' frame callback while
        # the reader is parked with nothing queued before it (True: taken; False: queue it).
        # A frame relayed here skips the reader task's wake-up.
        self.take_now: Callable[[str | bytes], bool] | None = None
        # Tried first with every frame while set (see `FrameRelay`).
        self.native: FrameRelay | None = None

    # For subclasses -----------------------------------------------------------------------------

    def on_message(self, message: str | bytes) -> None:
        """A whole message arrived."""
        raise NotImplementedError

    def fail(self, code: int, reason: str) -> None:
        """The peer broke the protocol (or a bound): close with `code` and stop reading."""
        raise NotImplementedError

    def read_data_frame(self, frame: picows.WSFrame) -> bool:
        """Take a text, binary or continuation frame (True); any other kind is the caller's."""
        kind = frame.msg_type
        if kind is TEXT or kind is BINARY:
            if self.fragments is not None:
                self.fail(1002, "a new message inside a fragmented one")
            elif frame.payload_size > self.max_message_bytes:
                self.fail(1009, "message too big")
            elif frame.fin:
                self._message(frame.get_payload_as_bytes(), text=kind is TEXT)
            else:
                self.fragments = bytearray(frame.get_payload_as_memoryview())
                self.fragments_text = kind is TEXT
            return True
        if kind is CONTINUATION:
            if self.fragments is None:
                self.fail(1002, "a continuation without a message")
                return True
            self.fragments += frame.get_payload_as_memoryview()
            if len(self.fragments) > self.max_message_bytes:
                self.fail(1009, "message too big")
            elif frame.fin:
                data, self.fragments = bytes(self.fragments), None
                self._message(data, text=self.fragments_text)
            return True
        return False

    def hand_over(
        self, message: str | bytes, queued: Sized, reader: asyncio.Future[None] | None
    ) -> bool:
        """Whether `take_now` took `message` (else it joins `queued`). Only while the reader is
        parked on `reader`: a message taken while the reader still works on an earlier one, or
        with others queued, would overtake them."""
        return (
            self.take_now is not None
            and self.reader_parked(queued, reader)
            and self.take_now(message)
        )

    @staticmethod
    def reader_parked(queued: Sized, reader: asyncio.Future[None] | None) -> bool:
        return not queued and reader is not None and not reader.done()

    @property
    def peer_reading(self) -> bool:
        """The peer takes our writes (picows has not paused us)."""
        return self.writable is None or self.writable.is_set()

    async def wait_writable(self) -> None:
        if not self.peer_reading:
            assert self.writable is not None
            await self.writable.wait()

    def release_writers(self) -> None:
        """The connection is gone: nobody waits to write any more."""
        if self.writable is not None:
            self.writable.set()

    # picows callbacks ---------------------------------------------------------------------------

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = asyncio.Event()
        self.writable.clear()

    def resume_writing(self) -> None:
        if self.writable is not None:
            self.writable.set()

    # ---------------------------------------------------------------------------------------------

    def _message(self, data: bytes, *, text: bool) -> None:
        if not text:
            self.on_message(data)
            return
        try:
            decoded = data.decode()
        except UnicodeDecodeError:
            self.fail(1007, "text frame is not UTF-8")
            return
        self.on_message(decoded)
