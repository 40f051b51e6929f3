"""TCP connections whose every read says when its bytes reached the socket (the kernel's receive
time, Linux `SO_TIMESTAMPNS`), for the benchmarks' stand-ins.

The load benchmark times each frame from its send to its arrival at the far end. A stand-in (the
fake xAI, the phones) that only looks at the clock once its own event loop gets round to the
frame adds its own lateness to the worker's: on a shared core that was up to 20 ms at p99. The
kernel stamps the frame as it lands in the receive queue, however late the reader is. What the
reader then takes is reported beside it as read lag.

`StampedTransport` is a plain asyncio transport over a non-blocking socket (`add_reader`,
`recvmsg`, `send`), so the same protocol classes run on it, `asyncio.BufferedProtocol`s such as
picows' included (tests/fakes/stamped_picows.py); while a protocol handles a read,
`transport.arrived_at` is when the last of those bytes arrived (when one read carries several
frames, the earlier ones are charged the later arrival: never less lag than they had).

So a stand-in that reads a socket later than its next frame arrives still overstates the lag of
the frame before. Reading frame by frame would not help: TCP merges bytes waiting in a receive
queue and gives them the newest stamp (two frames sent 50 ms apart to a busy reader, read one
at a time, both came back stamped with the second's arrival). The stamps remove the stand-in's
lateness up to the gap between frames on one socket (20 ms for audio), not beyond.
"""

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

# Linux's value; Python's socket module does not name it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
READ_SIZE = 256 * 1024
STAMP_SPACE = socket.CMSG_SPACE(16)  # one struct timespec

# What a StampedTransport drives: one that takes the bytes read, or one that lends its buffer.
StreamProtocol = asyncio.Protocol | asyncio.BufferedProtocol
AnyProtocol = TypeVar("AnyProtocol", bound=StreamProtocol)


class StampedTransport(asyncio.Transport):
    """One connected socket driving one protocol."""

    def __init__(self, sock: socket.socket, protocol: StreamProtocol) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._pending = bytearray()
        self._closing = False
        self._lost = False
        self._eof_after_flush = False
        self.arrived_at = 0.0
        self._buffered = protocol if isinstance(protocol, asyncio.BufferedProtocol) else None
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        protocol.connection_made(self)
        self._loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        buffered = self._buffered
        try:
            if buffered is None:
                data, ancillary, _, _ = self._sock.recvmsg(READ_SIZE, STAMP_SPACE)
                size = len(data)
            else:  # into the protocol's own buffer, as asyncio does for one
                size, ancillary, _, _ = self._sock.recvmsg_into(
                    [buffered.get_buffer(READ_SIZE)], STAMP_SPACE
                )
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        if not size:  # the peer closed its side
            self._lose(None)
            return
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack("qq", value[:16])
                self.arrived_at = seconds + nanoseconds / 1e9
        if buffered is None:
            cast(asyncio.Protocol, self._protocol).data_received(data)
        else:
            buffered.buffer_updated(size)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._lost:
            return
        if not self._pending:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._lose(exc)
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
            self._loop.add_writer(self._fd, self._on_writable)
        self._pending += data

    def _on_writable(self) -> None:
        try:
            sent = self._sock.send(self._pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        del self._pending[:sent]
        if self._pending:
            return
        self._loop.remove_writer(self._fd)
        if self._eof_after_flush:
            self._shut_write()
        if self._closing:
            self._lose(None)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._pending:
            self._eof_after_flush = True
        else:
            self._shut_write()

    def _shut_write(self) -> None:
        with contextlib.suppress(OSError):  # already gone: connection_lost follows from reading
            self._sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Send what is queued, then close."""
        if self._closing:
            return
        self._closing = True
        if not self._pending:
            self._loop.call_soon(self._lose, None)

    def abort(self) -> None:
        self._pending.clear()
        self._lose(None)

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def get_write_buffer_size(self) -> int:
        return len(self._pending)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._sock
        if name in ("peername", "sockname") and not self._lost:
            return self._sock.getpeername() if name == "peername" else self._sock.getsockname()
        return default

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = self._closing = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._sock.close()
        self._protocol.connection_lost(exc)


class StampedServer:
    """Accepts connections on a listening socket, each on a `StampedTransport`."""

    def __init__(self, listener: socket.socket, factory: Callable[[], StreamProtocol]) -> None:
        self._listener = listener
        self._factory = factory
        self._loop = asyncio.get_running_loop()
        listener.setblocking(False)
        self._loop.add_reader(listener.fileno(), self._accept)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            StampedTransport(connection, self._factory())

    def close(self) -> None:
        self._loop.remove_reader(self._listener.fileno())
        self._listener.close()


async def serve_stamped(
    factory: Callable[[], StreamProtocol], host: str, port: int
) -> StampedServer:
    """Listen on host:port (0: any free port)."""
    return StampedServer(socket.create_server((host, port), backlog=1024), factory)


async def connect_stamped(
    factory: Callable[[], AnyProtocol], host: str, port: int
) -> tuple[StampedTransport, AnyProtocol]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    protocol = factory()
    return StampedTransport(sock, protocol), protocol


def arrival_time(transport: asyncio.BaseTransport | None) -> float:
    """When the bytes being handled arrived (time.time() clock): the kernel's stamp on a
    `StampedTransport`, else now (any other transport cannot say)."""
    return transport.arrived_at if isinstance(transport, StampedTransport) else time.time()
