"""picows WebSockets on stamped transports, for the benchmarks' stand-ins (the phones, the fake
xAI's realtime endpoint).

A stand-in's cost is the instrument's: on the runtime benchmark's shared core, websockets' Sans-I/O
framing in Python was a quarter of what the phones and the fake xAI spent per frame, and 400 calls
needed more than that core had. picows frames, masks and writes in C (its `send` goes straight to
the socket while nothing is queued), and its protocol reads into its own buffer, which
`StampedTransport` fills with `recvmsg_into` so the kernel's receive stamp stays
(tests/fakes/arrival_stamps.py): a listener reads it as `transport.underlying_transport.arrived_at`.

picows builds its protocol inside `ws_connect`/`ws_create_server` on the loop's own transports,
which cannot carry the stamps; here the protocol is built the same way (`WSProtocol` with the
arguments those functions pass, auto-ping off, auto-pong on) and driven by a `StampedTransport`.
The worker itself uses only picows' public API (runtime/switchboard_runtime/worker/).
"""

import logging
from collections.abc import Callable
from typing import TypeGuard, TypeVar, cast

from picows import (
    WSAutoPingStrategy,
    WSFrame,
    WSListener,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in its stubs
from picows.url import parse_url

from tests.fakes.arrival_stamps import StampedServer, connect_stamped, serve_stamped

HANDSHAKE_TIMEOUT = 10.0
MAX_FRAME_SIZE = 4 * 1024 * 1024
READ_BUFFER_SIZE = 16 * 1024
# picows logs each connection at INFO; a stand-in with hundreds of them says only what is wrong.
LOGGER = logging.getLogger("tests.fakes.stamped_picows")
LOGGER.setLevel(logging.WARNING)

AnyListener = TypeVar("AnyListener", bound=WSListener)
# Answers an upgrade request: a listener for the connection, or a refusal (picows' own types).
ServerListenerFactory = Callable[[WSUpgradeRequest], WSListener | WSUpgradeResponseWithListener]


def ws_protocol(
    listener_factory: Callable[..., object], *, netloc: str | None, path: str | None
) -> WSProtocol:
    """picows' protocol for one connection: a client's when `netloc` is given, else a server's."""
    return WSProtocol(
        netloc,
        path,
        netloc is not None,  # is_client_side
        listener_factory,
        LOGGER,
        True,  # disconnect_on_exception
        HANDSHAKE_TIMEOUT,
        False,  # enable_auto_ping
        HANDSHAKE_TIMEOUT,  # auto_ping_idle_timeout (unused)
        HANDSHAKE_TIMEOUT,  # auto_ping_reply_timeout (unused)
        WSAutoPingStrategy.PING_WHEN_IDLE,
        True,  # enable_auto_pong
        MAX_FRAME_SIZE,
        None,  # extra_headers
        READ_BUFFER_SIZE,
    )


async def connect(
    url: str, listener_factory: Callable[[], AnyListener]
) -> tuple[WSTransport, AnyListener]:
    """Open a WebSocket to `url` (ws:// on loopback) and finish its opening handshake, as
    picows' `ws_connect` does (its `WSHandshakeError` when the server refuses it)."""
    parsed = parse_url(url)
    _, protocol = await connect_stamped(
        lambda: ws_protocol(listener_factory, netloc=parsed.netloc, path=parsed.resource_name),
        parsed.host,
        parsed.port,
    )
    await protocol.wait_until_handshake_complete()
    return protocol.transport, cast(AnyListener, protocol.listener)


async def serve(listener_factory: ServerListenerFactory, host: str, port: int) -> StampedServer:
    """Accept WebSockets on host:port (0: any free port); `listener_factory` answers each
    upgrade request."""
    return await serve_stamped(
        lambda: ws_protocol(listener_factory, netloc=None, path=None), host, port
    )


def is_open(ws: WSTransport | None) -> TypeGuard[WSTransport]:
    """Connected, and no close sent yet: text may still go out."""
    return ws is not None and not ws.is_disconnected and not ws.is_close_frame_sent


def answer_close(transport: WSTransport, frame: WSFrame) -> None:
    """The peer's close frame: answer it (unless ours went first), then hang up."""
    if not transport.is_close_frame_sent:
        transport.send_close(frame.get_close_code())
    transport.disconnect()
