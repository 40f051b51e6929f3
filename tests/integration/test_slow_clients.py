"""Slow clients cannot hold connections: headers must arrive within a bound after connecting,
a JSON body within a bound after its headers. Each guard beside the connection staying open
without it."""

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from control_plane.app import create_app
from control_plane.settings import Settings
from switchboard_runtime.worker import serving as server_module
from tests.fakes.server import free_port


class Served:
    def __init__(self, app: Any, http: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", http=http, lifespan="on"
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


@pytest.fixture
def short_header_timeout(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(server_module, "header_timeout_seconds", lambda: 0.5)
    yield


def test_a_connection_that_never_finishes_its_headers_is_closed(
    app: Any, short_header_timeout: None
) -> None:
    with Served(app, server_module.HeaderTimeoutProtocol) as served:
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


def test_without_the_body_clock_the_request_waits(app: Any) -> None:
    # The middleware stack is built when the server starts, from these arguments.
    for middleware in app.user_middleware:
        if middleware.cls.__name__ == "RequestLimitsMiddleware":
            middleware.kwargs["body_timeout_seconds"] = 1000.0
    with Served(app, "httptools") as served:
        assert closed_within(served.port, JSON_HEAD, 2.5) is None
