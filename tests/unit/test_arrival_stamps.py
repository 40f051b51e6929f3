"""The benchmarks' stamped transport: a reader that gets round to its bytes late still learns
when they arrived, and the bytes themselves pass as on any transport."""

import asyncio
import time

from tests.fakes.arrival_stamps import arrival_time, connect_stamped, serve_stamped


class Recorder(asyncio.Protocol):
    """Keeps what arrives with (arrival, read) times; `done` once the connection is gone."""

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.reads: list[tuple[bytes, float, float]] = []
        self.lost = 0
        self.heard = asyncio.Event()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reads.append((data, arrival_time(self.transport), time.time()))
        self.heard.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost += 1
        self.done.set_result(None)


async def late_read(stamped: bool) -> tuple[float, float, float]:
    """(sent, arrival as the reader learns it, read): the reader's loop is busy for 0.2 s."""
    receiver = Recorder()
    if stamped:
        server = await serve_stamped(lambda: receiver, "127.0.0.1", 0)
        sender, _ = await connect_stamped(asyncio.Protocol, "127.0.0.1", server.port)
    else:
        plain = await asyncio.get_running_loop().create_server(lambda: receiver, "127.0.0.1", 0)
        port = plain.sockets[0].getsockname()[1]
        sender, _ = await asyncio.get_running_loop().create_connection(
            asyncio.Protocol, "127.0.0.1", port
        )
    await asyncio.sleep(0.05)  # accepted
    sent = time.time()
    sender.write(b"frame")
    time.sleep(0.2)  # noqa: ASYNC251 - blocking on purpose: the bytes wait in the socket
    await asyncio.wait_for(receiver.heard.wait(), 5)
    sender.close()
    await asyncio.wait_for(receiver.done, 5)
    data, arrived, read = receiver.reads[0]
    assert data == b"frame"
    return sent, arrived, read


async def test_a_late_reader_learns_when_the_bytes_arrived() -> None:
    sent, arrived, read = await late_read(stamped=True)
    assert read - sent >= 0.2
    assert sent <= arrived < sent + 0.1  # the kernel's stamp, not the read


async def test_without_the_stamp_the_readers_lateness_counts_as_lag() -> None:
    sent, arrived, read = await late_read(stamped=False)
    assert arrived - sent >= 0.2 and 0 <= read - arrived < 0.05  # it can only say "now"


async def test_a_large_write_arrives_whole_and_in_order_and_each_side_closes_once() -> None:
    receiver = Recorder()
    server = await serve_stamped(lambda: receiver, "127.0.0.1", 0)
    sender = Recorder()
    transport, _ = await connect_stamped(lambda: sender, "127.0.0.1", server.port)
    payload = bytes(range(256)) * 32_768  # 8 MiB: more than one send takes, so some is queued
    transport.write(payload[:1000])
    transport.write(payload[1000:])
    transport.write_eof()
    transport.close()
    await asyncio.wait_for(asyncio.gather(receiver.done, sender.done), 10)
    server.close()

    assert b"".join(data for data, _, _ in receiver.reads) == payload
    assert len(receiver.reads) > 1 and receiver.lost == sender.lost == 1
    assert transport.is_closing()
