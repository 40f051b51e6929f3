"""Run an ASGI app with uvicorn on a free loopback port in a background thread, serving
WebSockets as a worker app without its media plane would be served (no compression, 64 KiB)."""

import socket
import threading
import time
from typing import Any

import uvicorn

from switchboard_runtime.worker.serving import UVICORN_WEBSOCKETS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ReservedPorts:
    """Free loopback ports held until `release()` (`BackgroundServer` releases them once it has
    started), for servers that start a while after their ports must be known (a worker whose
    media port goes into the control plane's settings).
    A port from `free_port()` is free only at that instant: under xdist another process's
    `free_port()` can be given it before the server binds ("address already in use"). A held
    port is not given to anyone else's bind to port 0, yet a server binds it all the same:
    uvicorn's, asyncio's and picows' listeners set SO_REUSEADDR, which allows binding beside a
    socket that is bound but not listening."""

    def __init__(self, count: int) -> None:
        self.sockets: list[socket.socket] = []
        for _ in range(count):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            self.sockets.append(sock)
        self.ports: list[int] = [sock.getsockname()[1] for sock in self.sockets]

    def release(self) -> None:
        for sock in self.sockets:
            sock.close()


class BackgroundServer:
    def __init__(
        self,
        app: Any,
        port: int | None = None,
        server_class: type[uvicorn.Server] = uvicorn.Server,
        reserved: ReservedPorts | None = None,
        **websockets: Any,
    ) -> None:
        """`server_class`: `serving.SwitchboardServer` to stop as `switchboard worker` does
        (waiting for owed media streams when the app drains). `reserved`: ports the app's
        settings name (its own, its media plane's), released once it listens or fails to."""
        self.port = port or free_port()
        self.reserved = reserved
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="auto",
            ws_ping_interval=None,
            **(UVICORN_WEBSOCKETS | websockets),
        )
        self.server = server_class(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        try:
            while not self.server.started:
                if time.monotonic() > deadline or not self.thread.is_alive():
                    raise RuntimeError("background server did not start")
                time.sleep(0.01)
        finally:
            if self.reserved is not None:
                self.reserved.release()
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
