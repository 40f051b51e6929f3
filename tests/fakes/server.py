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


class BackgroundServer:
    def __init__(
        self,
        app: Any,
        port: int | None = None,
        server_class: type[uvicorn.Server] = uvicorn.Server,
        **websockets: Any,
    ) -> None:
        """`server_class`: `serving.SwitchboardServer` to stop as `switchboard worker` does
        (waiting for owed media streams when the app drains)."""
        self.port = port or free_port()
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
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("background server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
