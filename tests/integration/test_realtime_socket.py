"""The xAI sockets against a websockets server: what the session's tests do not reach
(fragmented messages, a peer that stops reading, proxies, TLS). Each test runs on both: the bare
runtime's (`realtime_socket`, websockets' Sans-I/O) and the worker's (`worker.xai_socket`,
picows)."""

import asyncio
import contextlib
import gc
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedError

from switchboard_runtime.realtime_socket import (
    LeanRealtimeSocket,
    SocketOpener,
    open_realtime_socket,
)
from switchboard_runtime.worker.xai_socket import (
    PicowsRealtimeSocket,
    open_picows_realtime_socket,
)
from tests.fakes.server import free_port
from tests.integration.callstack import poll

Handler = Callable[[ServerConnection], Awaitable[None]]
Socket = LeanRealtimeSocket | PicowsRealtimeSocket
SOCKETS: dict[str, tuple[SocketOpener, type[Socket]]] = {
    "lean": (open_realtime_socket, LeanRealtimeSocket),
    "picows": (open_picows_realtime_socket, PicowsRealtimeSocket),
}


@pytest.fixture(params=sorted(SOCKETS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def paused(socket: Socket) -> bool:
    """The socket waits for xAI to read before it takes another send."""
    if isinstance(socket, LeanRealtimeSocket):
        return socket.writable is not None
    return socket.writable is not None and not socket.writable.is_set()


def buffered_bytes(socket: Socket) -> int:
    if isinstance(socket, LeanRealtimeSocket):
        assert socket.transport is not None
        return socket.transport.get_write_buffer_size()
    assert socket.transport is not None
    return int(socket.transport.underlying_transport.get_write_buffer_size())


@contextlib.asynccontextmanager
async def open_against(handler: Handler, kind: str) -> AsyncIterator[Socket]:
    opener, socket_class = SOCKETS[kind]
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/v1/realtime"
        socket = await opener(url, headers={}, open_timeout=5, max_size=2**22)
        assert isinstance(socket, socket_class)
        try:
            yield socket
        finally:
            await socket.close()


async def test_a_message_sent_in_fragments_arrives_whole(kind: str) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(['{"type":', '"session.updated"', "}"])  # three frames, one message
        await ws.send('{"type":"ping"}')
        await ws.close()

    async with open_against(handler, kind) as socket:
        assert [message async for message in socket] == [
            '{"type":"session.updated"}',
            '{"type":"ping"}',
        ]


async def test_an_abnormal_close_raises_and_a_normal_one_ends_the_messages(kind: str) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("one")
        await ws.close(1011, "internal error")

    async with open_against(handler, kind) as socket:
        with pytest.raises(ConnectionClosedError) as closed:
            async for _ in socket:
                pass
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        assert socket.close_reason == "internal error"


async def test_sends_wait_while_xai_is_not_reading_instead_of_buffering_forever(kind: str) -> None:
    read = asyncio.Event()
    received: list[int] = []

    async def handler(ws: ServerConnection) -> None:
        await read.wait()
        async for message in ws:
            received.append(len(message))

    chunk = "x" * 2**20
    async with open_against(handler, kind) as socket:
        sending = asyncio.create_task(_send_many(socket, chunk, 64))
        await poll(lambda: paused(socket))  # kernel buffers full: paused
        await asyncio.sleep(0.05)
        assert not sending.done()  # waiting for xAI, not piling 64 MiB into memory
        read.set()
        await sending
        await poll(lambda: len(received) == 64)
        assert received == [len(chunk)] * 64


async def _send_many(socket: Socket, message: str, count: int) -> None:
    for _ in range(count):
        await socket.send(message)


async def test_a_configured_proxy_is_used(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """Behind an egress proxy the library's client (which tunnels) opens the socket: with the
    proxy variable pointing at a closed port the connection fails there."""

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/realtime"
        for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        opener, socket_class = SOCKETS[kind]
        direct = await opener(url, headers={}, open_timeout=5, max_size=2**20)
        assert isinstance(direct, socket_class)
        await direct.close()

        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
        with pytest.raises(OSError):
            await opener(url, headers={}, open_timeout=5, max_size=2**20)

        monkeypatch.setenv("no_proxy", "127.0.0.1")  # the usual way out of the proxy
        bypass = await opener(url, headers={}, open_timeout=5, max_size=2**20)
        assert not isinstance(bypass, ClientConnection)
        await bypass.close()


async def test_without_the_pause_every_send_returns_and_the_buffer_grows(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The twin: with the transport's pause ignored, sends to a peer that reads nothing all
    return at once, and the whole 64 MiB sits in the worker's memory."""
    monkeypatch.setattr(SOCKETS[kind][1], "pause_writing", lambda self: None)
    read = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await read.wait()
        async for _ in ws:
            pass

    async with open_against(handler, kind) as socket:
        await _send_many(socket, "x" * 2**20, 64)  # returns although nothing was read
        assert buffered_bytes(socket) > 32 * 2**20
        read.set()


async def test_a_silent_server_times_out_the_opening_and_leaves_nothing_behind(
    caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts the TCP connection, never answers the upgrade

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/realtime"
    with pytest.raises(TimeoutError):
        await SOCKETS[kind][0](url, headers={}, open_timeout=0.2, max_size=2**20)
    server.close()
    await asyncio.sleep(0.05)  # the aborted connection is lost
    gc.collect()  # an unretrieved exception is reported when its future is collected
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def _certificate(workdir: Path, host: str) -> tuple[Path, Path]:
    """A self-signed certificate for `host` (the test's own CA): (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = workdir / f"{host}.pem", workdir / f"{host}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@contextlib.asynccontextmanager
async def tls_server(workdir: Path, certificate_host: str) -> AsyncIterator[tuple[str, Path]]:
    """An echoing wss:// server on localhost whose certificate names `certificate_host`."""
    cert_file, key_file = _certificate(workdir, certificate_host)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, ssl=context) as server:  # reached as localhost
        yield f"wss://localhost:{server.sockets[0].getsockname()[1]}/v1/realtime", cert_file


async def test_wss_verifies_the_certificate_and_carries_the_call(tmp_path: Path, kind: str) -> None:
    async with tls_server(tmp_path, "localhost") as (url, ca):
        trusting = ssl.create_default_context(cafile=str(ca))
        socket = await SOCKETS[kind][0](
            url, headers={}, open_timeout=5, max_size=2**20, tls=trusting
        )
        assert isinstance(socket, SOCKETS[kind][1])
        await socket.send('{"type":"session.update"}')
        assert await socket.recv() == '{"type":"session.update"}'
        await socket.close()

        with pytest.raises(ssl.SSLCertVerificationError):  # the system's CAs never signed it
            await SOCKETS[kind][0](url, headers={}, open_timeout=5, max_size=2**20)


async def test_wss_refuses_a_certificate_for_another_host(tmp_path: Path, kind: str) -> None:
    async with tls_server(tmp_path, "api.x.ai.example") as (url, ca):
        trusting = ssl.create_default_context(cafile=str(ca))
        with pytest.raises(ssl.SSLCertVerificationError):
            await SOCKETS[kind][0](url, headers={}, open_timeout=5, max_size=2**20, tls=trusting)


async def test_without_verification_the_impostor_would_be_spoken_to(
    tmp_path: Path, kind: str
) -> None:
    """The twin: with certificate checks switched off, a server holding another host's
    certificate gets the call's traffic (and its key, in the real handshake)."""
    async with tls_server(tmp_path, "api.x.ai.example") as (url, _):
        blind = ssl.create_default_context()
        blind.check_hostname = False
        blind.verify_mode = ssl.CERT_NONE
        socket = await SOCKETS[kind][0](url, headers={}, open_timeout=5, max_size=2**20, tls=blind)
        assert isinstance(socket, LeanRealtimeSocket | PicowsRealtimeSocket)
        await socket.send("heard")
        assert await socket.recv() == "heard"
        await socket.close()
