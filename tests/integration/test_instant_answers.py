"""Instant answers: under `switchboard serve`'s protocol (`serving.GuardedHttpProtocol`) a hot
read the control plane already holds is written as its headers are parsed, without reaching the
ASGI app. The same bytes as the app's own path, counted in the metrics, and never at the cost of
order (pipelined requests) or memory (a client that does not read): each of those two guards
beside the harm it prevents, with the guard switched off."""

import contextlib
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from control_plane.app import create_app
from control_plane.settings import Settings
from switchboard_runtime.worker import serving
from switchboard_runtime.worker.serving import GuardedHttpProtocol
from tests.fakes.server import BackgroundServer

TIERS = b"GET /api/v1/tiers HTTP/1.1\r\nHost: x\r\n\r\n"
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

Response = tuple[bytes, list[tuple[bytes, bytes]], bytes]  # status line, headers, body


class CountedApp:
    """The control plane, counting the HTTP requests that reach it (an instant answer does not)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.http_requests = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.http_requests += 1
        await self.app(scope, receive, send)


@pytest.fixture
def control_plane(tmp_path: Path, sqlite_template: Path) -> Any:
    shutil.copyfile(sqlite_template, tmp_path / "instant.db")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=f"sqlite:///{tmp_path}/instant.db",
        master_key_file=tmp_path / "master.key",
    )
    return create_app(settings)


@pytest.fixture
def served(control_plane: Any) -> Iterator[tuple[BackgroundServer, CountedApp]]:
    counted = CountedApp(control_plane)
    with BackgroundServer(counted, http=GuardedHttpProtocol) as server:
        yield server, counted


def exchange(port: int, sent: bytes, count: int) -> list[Response]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(5)
        sock.sendall(sent)
        return read_responses(sock, count)


def read_responses(sock: socket.socket, count: int) -> list[Response]:
    buffer, responses = b"", []
    while len(responses) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(responses)} responses"
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        status, *lines = head.split(b"\r\n")
        headers = [(name.lower(), value) for name, value in (ln.split(b": ", 1) for ln in lines)]
        length = int(dict(headers).get(b"content-length", b"0"))
        while len(buffer) < length:
            buffer += sock.recv(65536)
        responses.append((status, headers, buffer[:length]))
        buffer = buffer[length:]
    return responses


def without_date(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name != b"date"]


def test_a_kept_read_is_answered_without_the_app_and_as_the_app_answers_it(
    served: tuple[BackgroundServer, CountedApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, counted = served
    [built] = exchange(server.port, TIERS, 1)  # the route builds and keeps it
    assert built[0] == b"HTTP/1.1 200 OK" and counted.http_requests == 1
    [instant] = exchange(server.port, TIERS, 1)
    assert counted.http_requests == 1  # the app never saw it
    etag = dict(instant[1])[b"etag"]
    revalidate = b"GET /api/v1/tiers HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag + b"\r\n\r\n"
    [not_modified] = exchange(server.port, revalidate, 1)
    assert not_modified[0] == b"HTTP/1.1 304 Not Modified" and not_modified[2] == b""
    assert counted.http_requests == 1

    # The same kept answers through uvicorn's own response cycle (the app's lane, in ASGI).
    monkeypatch.setattr(GuardedHttpProtocol, "_instant_response", lambda self: None)
    [via_app] = exchange(server.port, TIERS, 1)
    [via_app_304] = exchange(server.port, revalidate, 1)
    assert counted.http_requests == 3
    assert (instant[0], without_date(instant[1]), instant[2]) == (
        via_app[0],
        without_date(via_app[1]),
        via_app[2],
    )
    assert without_date(not_modified[1]) == without_date(via_app_304[1])
    # And what the route answered when it built it: the same body, the same headers.
    assert instant[2] == built[2]
    assert sorted(without_date(instant[1])) == sorted(without_date(built[1]))


def test_instant_answers_are_counted_in_the_request_metrics(
    served: tuple[BackgroundServer, CountedApp], control_plane: Any
) -> None:
    server, counted = served
    exchange(server.port, TIERS, 1)
    exchange(server.port, TIERS * 5, 5)
    assert counted.http_requests == 1
    count = control_plane.state.metrics.registry.get_sample_value(
        "switchboard_http_request_duration_seconds_count",
        {"method": "GET", "route": "/api/v1/tiers", "status": "200"},
    )
    assert count == 6


@pytest.mark.parametrize(
    ("request_bytes", "status_line"),
    [
        (
            b"GET /api/v1/tiers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"HTTP/1.1 200 OK",
        ),
        (b"GET /api/v1/tiers HTTP/1.0\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK"),
        (
            b"GET /api/v1/tiers HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
            b"HTTP/1.1 200 OK",
        ),
        (b"GET /api/v1/%74iers HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK"),
        (b"HEAD /api/v1/tiers HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 405 Method Not Allowed"),
    ],
    ids=["connection-close", "http-1.0", "with-a-body", "percent-encoded", "head"],
)
def test_anything_but_a_plain_get_goes_to_the_app(
    served: tuple[BackgroundServer, CountedApp], request_bytes: bytes, status_line: bytes
) -> None:
    server, counted = served
    exchange(server.port, TIERS, 1)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(5)
        sock.sendall(request_bytes)
        answer = sock.recv(65536)
    assert counted.http_requests == 2, request_bytes
    assert answer.split(b"\r\n", 1)[0] == status_line


def first_of_pipelined(port: int) -> bytes:
    """The body of the first response to a /healthz followed at once by a kept read."""
    [first, _] = exchange(port, HEALTH + TIERS, 2)
    return first[2]


def test_pipelined_requests_are_answered_in_order(
    served: tuple[BackgroundServer, CountedApp],
) -> None:
    server, _ = served
    [(_, _, tiers)] = exchange(server.port, TIERS, 1)
    [(_, _, health)] = exchange(server.port, HEALTH, 1)
    assert first_of_pipelined(server.port) == health != tiers


def test_without_waiting_its_turn_a_kept_read_overtakes_the_request_before_it(
    served: tuple[BackgroundServer, CountedApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = served
    [(_, _, tiers)] = exchange(server.port, TIERS, 1)
    monkeypatch.setattr(GuardedHttpProtocol, "_response_owed", lambda self: False)
    assert first_of_pipelined(server.port) == tiers


def backlog_of_a_client_that_does_not_read(server: BackgroundServer) -> int:
    """Pipeline kept reads for 2 s without reading any answer: the bytes the server then holds
    for this client in its own write buffer (past what the kernel's socket buffers took)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.settimeout(0.2)
        batch, deadline = TIERS * 500, time.monotonic() + 2
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):  # the server stopped reading us
                sock.sendall(batch)
        time.sleep(0.3)
        connections = list(server.server.server_state.connections)
        return max(conn.transport.get_write_buffer_size() for conn in connections)


def test_a_client_that_does_not_read_gets_nothing_more_held_for_it(
    served: tuple[BackgroundServer, CountedApp],
) -> None:
    server, _ = served
    exchange(server.port, TIERS, 1)
    assert backlog_of_a_client_that_does_not_read(server) < 1 << 20


def test_without_minding_the_backlog_the_server_holds_ever_more_for_it(
    served: tuple[BackgroundServer, CountedApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = served
    exchange(server.port, TIERS, 1)
    monkeypatch.setattr(GuardedHttpProtocol, "_client_behind", lambda self: False)
    assert backlog_of_a_client_that_does_not_read(server) > 16 << 20


def idle_after_an_instant_answer(control_plane: Any, seconds: float) -> bytes | None:
    """Under a 1 s keep-alive: a kept read answered instantly, then nothing for `seconds`:
    b"" if the server closed the connection meanwhile, None if it is still open."""
    with BackgroundServer(control_plane, http=GuardedHttpProtocol, timeout_keep_alive=1) as server:
        exchange(server.port, TIERS, 1)  # the route builds it
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.settimeout(5)
            sock.sendall(TIERS)
            [(status, _, _)] = read_responses(sock, 1)
            assert status == b"HTTP/1.1 200 OK"
            sock.settimeout(seconds)
            try:
                return sock.recv(1)
            except TimeoutError:
                return None


def test_an_idle_connection_after_an_instant_answer_is_closed_as_after_any(
    control_plane: Any,
) -> None:
    assert idle_after_an_instant_answer(control_plane, 3) == b""


def test_without_its_deadline_an_idle_connection_after_an_instant_answer_stays_open(
    control_plane: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving.Deadlines, "watch", lambda self, connection: None)
    assert idle_after_an_instant_answer(control_plane, 2) is None
