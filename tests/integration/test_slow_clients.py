"""Slow clients cannot hold connections: headers must arrive within a bound after connecting,
a whole body (any content type) within one deadline after its headers, and one client address
has only so many requests still arriving. Each guard beside the connection staying open
without it."""

import contextlib
import dataclasses
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from websockets.sync.client import connect as ws_connect

from control_plane.app import create_app
from control_plane.settings import Settings
from switchboard_runtime.worker import serving as server_module
from switchboard_runtime.worker.serving import UVICORN_WEBSOCKETS
from tests.fakes.server import free_port


class Served:
    def __init__(self, app: Any, http: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            http=http,
            lifespan="on",
            **UVICORN_WEBSOCKETS,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Served":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def app(tmp_path: Path, sqlite_template: Path) -> Any:
    import shutil

    shutil.copyfile(sqlite_template, tmp_path / "slow.db")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=f"sqlite:///{tmp_path}/slow.db",
        master_key_file=tmp_path / "master.key",
        http_body_timeout_seconds=1.0,
    )
    return create_app(settings)


def closed_within(port: int, sent: bytes, seconds: float) -> bytes | None:
    """What the server answers (b"" when it just closes) within `seconds`; None if the
    connection is still open and silent then."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(sent)
        sock.settimeout(seconds)
        try:
            return sock.recv(65536)
        except TimeoutError:
            return None


SLOW_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"  # never finished


def guards(**changes: Any) -> server_module.HttpGuards:
    base = server_module.HttpGuards(
        header_timeout_seconds=0.5,
        body_timeout_seconds=1.0,
        max_pending_per_address=64,
        trusted_proxies=(),
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def short_header_timeout(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(server_module, "http_guards", guards)
    yield


def test_a_connection_that_never_finishes_its_headers_is_closed(
    app: Any, short_header_timeout: None
) -> None:
    with Served(app, server_module.GuardedHttpProtocol) as served:
        assert closed_within(served.port, SLOW_HEADERS, 3) == b""
        assert closed_within(served.port, b"", 3) == b""  # connected, never spoke
        # A normal request on the same server is unaffected.
        answer = closed_within(served.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 3)
        assert answer is not None and answer.startswith(b"HTTP/1.1 200")


def test_without_the_clock_a_slow_connection_stays_open(app: Any) -> None:
    with Served(app, "httptools") as served:
        assert closed_within(served.port, SLOW_HEADERS, 2) is None


JSON_HEAD = (
    b"POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b'Content-Length: 100\r\n\r\n{"name":'
)


def test_a_body_that_does_not_arrive_gets_408(app: Any) -> None:
    with Served(app, "httptools") as served:
        answer = closed_within(served.port, JSON_HEAD, 4)
        assert answer is not None and answer.startswith(b"HTTP/1.1 408")
        assert b"body_timeout" in answer


def without_body_deadline(app: Any) -> None:
    # The middleware stack is built when the server starts, from these arguments.
    for middleware in app.user_middleware:
        if middleware.cls.__name__ == "BoundedBody":
            middleware.kwargs["timeout_seconds"] = 1000.0


def test_without_the_body_clock_the_request_waits(app: Any) -> None:
    without_body_deadline(app)
    with Served(app, "httptools") as served:
        assert closed_within(served.port, JSON_HEAD, 2.5) is None


def drip(port: int, head: bytes, every: float, seconds: float) -> tuple[bytes | None, float]:
    """Send `head`, then one more body byte every `every` seconds for up to `seconds`: what
    the server answered (b"" for a plain close, None if nothing) and after how long."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head)
        sock.settimeout(every)
        while time.monotonic() - started < seconds:
            try:
                return sock.recv(65536), time.monotonic() - started
            except TimeoutError:
                try:
                    sock.sendall(b"a")
                except OSError:
                    return b"", time.monotonic() - started
    return None, time.monotonic() - started


def slow_request(path: str, content_type: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        "Content-Length: 10000\r\n\r\n"
    ).encode()


SLOW_BODIES = {
    "json": slow_request("/api/v1/tokens", "application/json"),
    "form (sign-in)": slow_request("/login", "application/x-www-form-urlencoded"),
    "text (claim)": slow_request("/api/v1/calls/claim", "text/plain"),
}


@pytest.mark.parametrize("kind", list(SLOW_BODIES))
def test_one_deadline_for_the_whole_body_whatever_its_type(app: Any, kind: str) -> None:
    # A byte every 0.3 s: each read is quick, the whole body is not. Deadline 1 s.
    with Served(app, "httptools") as served:
        answer, after = drip(served.port, SLOW_BODIES[kind], every=0.3, seconds=6)
    assert answer is not None and answer.startswith(b"HTTP/1.1 408"), (kind, answer)
    assert b"body_timeout" in answer and b"application/problem+json" in answer
    assert after < 4, after


@pytest.mark.parametrize("kind", list(SLOW_BODIES))
def test_without_the_whole_body_deadline_a_drip_stays_open(app: Any, kind: str) -> None:
    without_body_deadline(app)
    with Served(app, "httptools") as served:
        answer, _ = drip(served.port, SLOW_BODIES[kind], every=0.3, seconds=3)
    assert answer is None, (kind, answer)


# A body no route reads: the 405 is sent at once, and the rest would trickle in for ever.
UNREAD_BODY = slow_request("/healthz", "application/octet-stream")


def test_the_server_closes_a_body_no_route_reads(app: Any, short_header_timeout: None) -> None:
    with (
        Served(app, server_module.GuardedHttpProtocol) as served,
        socket.create_connection(("127.0.0.1", served.port)) as sock,
    ):
        sock.sendall(UNREAD_BODY)
        sock.settimeout(3)
        assert sock.recv(65536).startswith(b"HTTP/1.1 405")
        closed_after = time.monotonic()
        while True:  # keep dripping until the server closes
            time.sleep(0.2)
            try:
                sock.sendall(b"a")
                if sock.recv(1, socket.MSG_DONTWAIT) == b"":
                    break
            except BlockingIOError:
                pass
            except OSError:
                break
            assert time.monotonic() - closed_after < 4, "still open"


def test_without_the_server_clock_an_unread_body_trickles_on(app: Any) -> None:
    with Served(app, "httptools") as served:
        answer, _ = drip(served.port, UNREAD_BODY, every=0.2, seconds=1)
        assert answer is not None and answer.startswith(b"HTTP/1.1 405")
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            sock.sendall(UNREAD_BODY)
            sock.settimeout(3)
            assert sock.recv(65536).startswith(b"HTTP/1.1 405")
            for _ in range(10):  # 2.5 s of dripping: nobody closes
                time.sleep(0.25)
                sock.sendall(b"a")


@contextlib.contextmanager
def slow_connections(
    app: Any, monkeypatch: pytest.MonkeyPatch, count: int, **bounds: Any
) -> Iterator[tuple[int, list[socket.socket]]]:
    """A guarded server with these bounds, and `count` connections from this address that
    never finish their headers: its port and the connections (closed afterwards)."""
    monkeypatch.setattr(
        server_module, "http_guards", lambda: guards(header_timeout_seconds=30.0, **bounds)
    )
    with Served(app, server_module.GuardedHttpProtocol) as served:
        held = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(count)]
        try:
            for sock in held:
                sock.sendall(SLOW_HEADERS)
            time.sleep(0.2)
            yield served.port, held
        finally:
            for sock in held:
                sock.close()


def test_one_address_has_a_bounded_number_of_requests_still_arriving(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with slow_connections(app, monkeypatch, 3, max_pending_per_address=3) as (port, held):
        # The fourth from this address is closed at once, before it says anything...
        assert closed_within(port, b"", 2) == b""
        # ... and once one of the three goes, there is room again.
        held.pop().close()
        time.sleep(0.2)
        answer = closed_within(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 3)
        assert answer is not None and answer.startswith(b"HTTP/1.1 200")


def test_without_the_bound_one_address_holds_as_many_as_it_likes(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with slow_connections(app, monkeypatch, 20, max_pending_per_address=100_000) as (port, _):
        assert closed_within(port, b"", 1) is None  # the 21st is open too


def test_a_trusted_proxy_is_not_bounded_per_address(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    bounds = {"max_pending_per_address": 2, "trusted_proxies": loopback}
    with slow_connections(app, monkeypatch, 4, **bounds) as (port, _):
        assert closed_within(port, b"", 1) is None


BIG = 512 * 1024 * 1024


def test_a_declared_huge_body_is_refused_before_it_is_read(app: Any) -> None:
    head = (
        "POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {BIG}\r\n\r\n"
    ).encode()
    with Served(app, "httptools") as served:
        answer = closed_within(served.port, head, 3)
    assert answer is not None and answer.startswith(b"HTTP/1.1 413")
    assert b"request_too_large" in answer


def test_a_chunked_body_is_refused_as_it_passes_the_limit(app: Any) -> None:
    """No Content-Length: counted as it arrives, refused one read past the limit (1 MiB)."""
    head = (
        b"POST /login HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"  # 64 KiB
    sent = 0
    with (
        Served(app, "httptools") as served,
        socket.create_connection(("127.0.0.1", served.port)) as sock,
    ):
        sock.sendall(head)
        sock.settimeout(0.05)
        answer = b""
        while sent < 64 * 1024 * 1024 and not answer:
            try:
                sock.sendall(chunk)
                sent += len(chunk)
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    assert sent < 8 * 1024 * 1024, sent


async def echo_socket(scope: Any, receive: Any, send: Any) -> None:
    """A WebSocket that echoes text (and an app lifespan that does nothing)."""
    while True:
        message = await receive()
        kind = message["type"]
        if kind in ("lifespan.startup", "lifespan.shutdown"):
            await send({"type": f"{kind}.complete"})
        elif kind == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif kind == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})
        if kind in ("lifespan.shutdown", "websocket.disconnect"):
            return


def watched_after_a_websocket(served: Served) -> int:
    """Open a WebSocket, keep it past the header deadline, close it: how many connections the
    server's deadlines still hold afterwards."""
    with ws_connect(f"ws://127.0.0.1:{served.port}/") as socket_:
        time.sleep(1.0)  # twice the header deadline
        socket_.send("still here")
        assert socket_.recv(timeout=3) == "still here"
    time.sleep(0.3)
    return len(served.server.server_state.switchboard_deadlines.connections)  # type: ignore[attr-defined]


def test_a_websocket_leaves_the_deadlines_behind(short_header_timeout: None) -> None:
    with Served(echo_socket, server_module.GuardedHttpProtocol) as served:
        assert watched_after_a_websocket(served) == 0


def test_without_forgetting_upgraded_connections_the_deadlines_keep_them(
    short_header_timeout: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def upgrade_without_forgetting(self: server_module.GuardedHttpProtocol) -> None:
        self._end_request()
        HttpToolsProtocol.handle_websocket_upgrade(self)

    monkeypatch.setattr(
        server_module.GuardedHttpProtocol, "handle_websocket_upgrade", upgrade_without_forgetting
    )
    with Served(echo_socket, server_module.GuardedHttpProtocol) as served:
        assert watched_after_a_websocket(served) == 1
