"""The lean xAI socket (switchboard_runtime.realtime_socket) against a websockets server: what
the session's tests do not reach (fragmented messages, a peer that stops reading, proxies)."""

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedError

from switchboard_runtime.realtime_socket import LeanRealtimeSocket, open_realtime_socket
from tests.fakes.server import free_port
from tests.integration.callstack import poll

Handler = Callable[[ServerConnection], Awaitable[None]]


@contextlib.asynccontextmanager
async def open_against(handler: Handler) -> AsyncIterator[LeanRealtimeSocket]:
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/v1/realtime"
        socket = await open_realtime_socket(url, headers={}, open_timeout=5, max_size=2**22)
        assert isinstance(socket, LeanRealtimeSocket)
        try:
            yield socket
        finally:
            await socket.close()


async def test_a_message_sent_in_fragments_arrives_whole() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(['{"type":', '"session.updated"', "}"])  # three frames, one message
        await ws.send('{"type":"ping"}')
        await ws.close()

    async with open_against(handler) as socket:
        assert [message async for message in socket] == [
            '{"type":"session.updated"}',
            '{"type":"ping"}',
        ]


async def test_an_abnormal_close_raises_and_a_normal_one_ends_the_messages() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("one")
        await ws.close(1011, "internal error")

    async with open_against(handler) as socket:
        with pytest.raises(ConnectionClosedError) as closed:
            async for _ in socket:
                pass
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        assert socket.close_reason == "internal error"


async def test_sends_wait_while_xai_is_not_reading_instead_of_buffering_forever() -> None:
    read = asyncio.Event()
    received: list[int] = []

    async def handler(ws: ServerConnection) -> None:
        await read.wait()
        async for message in ws:
            received.append(len(message))

    chunk = "x" * 2**20
    async with open_against(handler) as socket:
        sending = asyncio.create_task(_send_many(socket, chunk, 64))
        await poll(lambda: socket.writable is not None)  # kernel buffers full: paused
        await asyncio.sleep(0.05)
        assert not sending.done()  # waiting for xAI, not piling 64 MiB into memory
        read.set()
        await sending
        await poll(lambda: len(received) == 64)
        assert received == [len(chunk)] * 64


async def _send_many(socket: LeanRealtimeSocket, message: str, count: int) -> None:
    for _ in range(count):
        await socket.send(message)


async def test_a_configured_proxy_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind an egress proxy the library's client (which tunnels) opens the socket: with the
    proxy variable pointing at a closed port the connection fails there."""

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/realtime"
        for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        direct = await open_realtime_socket(url, headers={}, open_timeout=5, max_size=2**20)
        assert isinstance(direct, LeanRealtimeSocket)
        await direct.close()

        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
        with pytest.raises(OSError):
            await open_realtime_socket(url, headers={}, open_timeout=5, max_size=2**20)

        monkeypatch.setenv("no_proxy", "127.0.0.1")  # the usual way out of the proxy
        bypass = await open_realtime_socket(url, headers={}, open_timeout=5, max_size=2**20)
        assert not isinstance(bypass, ClientConnection)
        await bypass.close()


async def test_without_the_pause_every_send_returns_and_the_buffer_grows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The twin: with the transport's pause ignored, sends to a peer that reads nothing all
    return at once, and the whole 64 MiB sits in the worker's memory."""
    monkeypatch.setattr(LeanRealtimeSocket, "pause_writing", lambda self: None)
    read = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await read.wait()
        async for _ in ws:
            pass

    async with open_against(handler) as socket:
        await _send_many(socket, "x" * 2**20, 64)  # returns although nothing was read
        assert socket.transport is not None
        assert socket.transport.get_write_buffer_size() > 32 * 2**20
        read.set()


async def test_a_silent_server_times_out_the_opening_and_leaves_nothing_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts the TCP connection, never answers the upgrade

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/realtime"
    with pytest.raises(TimeoutError):
        await open_realtime_socket(url, headers={}, open_timeout=0.2, max_size=2**20)
    server.close()
    await asyncio.sleep(0.05)  # the aborted connection is lost
    gc.collect()  # an unretrieved exception is reported when its future is collected
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
