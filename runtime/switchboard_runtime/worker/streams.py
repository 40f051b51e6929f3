"""A call's socket to the phone (or the browser), as the bridge reads and writes it.

A media stream arrives as a Starlette WebSocket. Under `switchboard worker` the server lets a call
take the stream over (`direct_stream`: frames straight to the call, no ASGI queue); under
another server the call reads through Starlette. `MediaStreams` routes the phone streams ahead of
FastAPI's router, which would wrap every frame in exception handlers a stream has no use for.
"""

import contextlib
import functools
import re
from collections.abc import Awaitable, Callable

from fastapi import WebSocket
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from switchboard_runtime.contract import WORKER_SHUTDOWN
from switchboard_runtime.session import GrokRealtimeSession
from switchboard_runtime.telephony import DIALECTS, Dialect, PhoneGone
from switchboard_runtime.worker.direct_stream import DIRECT_STREAM, DirectPhone

# Serves a phone's media stream: (socket, dialect, agent id, token from the URL or None).
MediaStreamHandler = Callable[[WebSocket, Dialect, str, str | None], Awaitable[None]]
MEDIA_STREAM_PATH = re.compile(r"/ws/(?P<provider>twilio|telnyx)/(?P<agent_id>[^/]+)")

# Close codes the phone side sees (application range 4000-4999).
CLOSE_UNAUTHORIZED = 4401
CLOSE_REFUSED = 4403
CLOSE_FAILED = 4500


class StarlettePhone:
    """A media stream accepted by this app, as the bridge's PhoneSocket (or BrowserSocket)."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

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


def phone_socket(
    phone: WebSocket, session: GrokRealtimeSession | None = None, drain_seconds: float = 0.0
) -> DirectPhone | StarlettePhone:
    """An accepted media stream (a phone's or a browser's) as the bridge reads it: taken over
    from the server where it offers that (`direct_stream`, under `switchboard worker`), else
    through Starlette. When the server stops, a taken-over call goes on for `drain_seconds`,
    then ends as `worker_shutdown` (not as a hang-up)."""
    direct = (phone.scope.get("extensions") or {}).get(DIRECT_STREAM)
    if direct is None:
        return StarlettePhone(phone)
    taken: DirectPhone = direct["take_over"]()
    if session is not None:
        taken.on_server_shutdown = functools.partial(
            session.refuse, WORKER_SHUTDOWN, "the call worker is shutting down"
        )
        taken.drain_seconds = drain_seconds
    return taken


async def close_socket(socket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # the phone may have gone
        await socket.close(code, reason)


class MediaStreams:
    """Serves the phone media streams (`/ws/twilio/{agent_id}`, `/ws/telnyx/{agent_id}`) ahead
    of FastAPI's router; everything else goes on to the app.

    Every frame a call sends the phone passes through whatever wraps the socket's `send`. Routed
    by FastAPI, that is two exception-handling wrappers per frame a media stream has no use for
    (it handles its own errors): served here, reading and answering a Twilio frame costs ~15 %
    less CPU (`make bench-phone-side`), on the loop every call's audio waits for."""

    def __init__(self, app: ASGIApp, handle: MediaStreamHandler) -> None:
        self.app, self.handle = app, handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = (
            MEDIA_STREAM_PATH.fullmatch(scope["path"]) if scope["type"] == "websocket" else None
        )
        if stream is None:
            await self.app(scope, receive, send)
            return
        websocket = WebSocket(scope, receive, send)
        token = websocket.query_params.get("token")
        await self.handle(websocket, DIALECTS[stream["provider"]], stream["agent_id"], token)
