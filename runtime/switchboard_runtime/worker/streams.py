"""A call's socket (a phone's media stream, a browser's test call), as the worker drives it.

On `switchboard worker` call sockets arrive on the media plane (`media_plane.MediaSocket`).
A worker app served without one (`SWITCHBOARD_WORKER_MEDIA_PORT` unset, e.g. under a host
backend's own ASGI server) takes them through Starlette (`StarletteSocket`); `MediaStreams` then
routes the phone streams ahead of FastAPI's router, which would wrap every frame in exception
handlers a stream has no use for.
"""

import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from fastapi import WebSocket
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from switchboard_runtime.telephony import DIALECTS, Dialect, PhoneGone
from switchboard_runtime.worker.media_plane import PHONE_PATH

# Close codes the phone side sees (application range 4000-4999).
CLOSE_UNAUTHORIZED = 4401
CLOSE_REFUSED = 4403
CLOSE_FAILED = 4500


class CallSocket(Protocol):
    """An accepted call socket: the bridge's PhoneSocket (or BrowserSocket), plus its close,
    its client's address and how its call ends when the worker stops."""

    @property
    def client_host(self) -> str: ...

    async def receive(self) -> str | bytes | None:
        """The next frame, text or binary; None once the other side has gone."""
        ...

    async def send_text(self, text: str) -> None:
        """Send one frame; raises PhoneGone when the other side has gone."""
        ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None:
        """Close with this code and reason; never raises (the other side may have gone)."""
        ...

    def end_on_shutdown(
        self, end: Callable[[], Coroutine[Any, Any, None]], drain_seconds: float
    ) -> None:
        """When the worker stops, let the call go on for `drain_seconds`, then `end()` it."""
        ...


class StarletteSocket:
    """A call socket served by the app's own ASGI server, accepted, as a `CallSocket`. When
    that server stops it closes the socket itself (the call ends as a hang-up)."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    @classmethod
    async def accept(cls, websocket: WebSocket) -> "StarletteSocket":
        await websocket.accept()
        return cls(websocket)

    @property
    def client_host(self) -> str:
        return self.websocket.client.host if self.websocket.client else ""

    async def receive(self) -> str | bytes | None:
        try:
            message = await self.websocket.receive()
        except (WebSocketDisconnect, RuntimeError):  # already disconnected
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text: str | None = message.get("text")
        return text if text is not None else bytes(message.get("bytes") or b"")

    async def send_text(self, text: str) -> None:
        try:
            await self.websocket.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:  # closed, or the TCP is gone
            raise PhoneGone from exc

    async def send_bytes(self, data: bytes) -> None:
        try:
            await self.websocket.send_bytes(data)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise PhoneGone from exc

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
            await self.websocket.close(code, reason)

    def end_on_shutdown(
        self, end: Callable[[], Coroutine[Any, Any, None]], drain_seconds: float
    ) -> None:
        pass  # the server closes its sockets as it stops


# Serves a phone's media stream: (socket, dialect, agent id, token from the URL or None).
MediaStreamHandler = Callable[[CallSocket, Dialect, str, str | None], Awaitable[None]]


class MediaStreams:
    """Without a media plane: serves the phone media streams (`/ws/twilio/{agent_id}`,
    `/ws/telnyx/{agent_id}`) ahead of FastAPI's router; everything else goes on to the app."""

    def __init__(self, app: ASGIApp, handle: MediaStreamHandler) -> None:
        self.app, self.handle = app, handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = PHONE_PATH.fullmatch(scope["path"]) if scope["type"] == "websocket" else None
        if stream is None:
            await self.app(scope, receive, send)
            return
        websocket = WebSocket(scope, receive, send)
        token = websocket.query_params.get("token")
        socket = await StarletteSocket.accept(websocket)
        await self.handle(socket, DIALECTS[stream["provider"]], stream["agent_id"], token)
