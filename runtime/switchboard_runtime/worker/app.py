"""The call worker: phone numbers point here, and each call runs on the engine its agent's tier
resolves to. grok-realtime runs on GrokRealtimeSession; other engines run on handlers the host
backend registers; with no handler the call is refused with a clear message. Never a fallback.

Call entry is authenticated end to end:
1. The phone provider fetches `/twiml/{agent}` or `/texml/{agent}`. The worker hands the signed
   webhook to the control plane, which checks the signature with the workspace's own secret and
   issues the call (or refuses it: the caller hears a polite hang-up, or busy at the call limit).
2. The answer points the media stream here with a single-use stream token.
3. The stream must present that token at `start`, within a few seconds, before any config is
   fetched or xAI is reached; workspace and agent come from the token, never from the caller.
   Anything else closes the socket with 4401 `unauthorized` (the why goes to the log only).
"""

import asyncio
import base64
import contextlib
import functools
import gc
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode
from xml.sax.saxutils import escape, quoteattr

import httpx
from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from switchboard_runtime.browser import BrowserStats, bridge_browser, message, wait_for_token
from switchboard_runtime.client import (
    BoundedClient,
    ClaimedCall,
    ControlPlaneClient,
    ControlPlaneError,
    IssuedCall,
    keep_lease,
)
from switchboard_runtime.contract import WORKER_SHUTDOWN, AudioChannel, ResolvedSessionConfig
from switchboard_runtime.loop_lag import GcPauses, LoopLagMonitor
from switchboard_runtime.session import (
    GROK_ENGINE,
    CallRefusedError,
    GrokRealtimeSession,
    HttpTelemetrySink,
    TelemetrySink,
)
from switchboard_runtime.telephony import (
    DIALECTS,
    BridgeStats,
    Dialect,
    PhoneGone,
    Start,
    bridge,
    wait_for_start,
)
from switchboard_runtime.tools import ToolRegistry
from switchboard_runtime.warm import WarmCall, WarmSessions
from switchboard_runtime.worker.bounded_body import BodyProblem, BoundedBody
from switchboard_runtime.worker.capacity import CallCapacity, PreStartSockets
from switchboard_runtime.worker.direct_stream import (
    DIRECT_STREAM,
    FRAME_LIMITS,
    DirectPhone,
    FrameLimits,
)
from switchboard_runtime.worker.metrics import CONTENT_TYPE, WorkerMetrics, WorkerState
from switchboard_runtime.worker.serving import STOP_GATE
from switchboard_runtime.worker.settings import WorkerSettings, metrics_allowed

logger = logging.getLogger(__name__)

# A host backend's handler for another engine: (phone socket, dialect, start, resolved config).
EngineHandler = Callable[[WebSocket, Dialect, Start, ResolvedSessionConfig], Awaitable[None]]

# Serves a phone's media stream: (socket, dialect, agent id, token from the URL or None).
MediaStreamHandler = Callable[[WebSocket, Dialect, str, str | None], Awaitable[None]]
MEDIA_STREAM_PATH = re.compile(r"/ws/(?P<provider>twilio|telnyx)/(?P<agent_id>[^/]+)")

# Close codes the phone side sees (application range 4000-4999).
CLOSE_UNAUTHORIZED = 4401
CLOSE_REFUSED = 4403
CLOSE_FAILED = 4500
UNAUTHORIZED = "unauthorized"
AT_CAPACITY = "worker_at_capacity"
AT_CAPACITY_MESSAGE = "This call worker is at capacity. Try the test call again in a moment."
STOPPING = "worker_stopping"
STOPPING_MESSAGE = "This call worker is stopping. Try the test call again in a moment."

ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAX_WEBHOOK_BYTES = 64 * 1024
MAX_TOKEN_CHARS = 1024

SORRY = "We're sorry, this line can't take your call right now. Please try again later."


def _xml(body: str) -> Response:
    return Response(
        f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>',
        media_type="application/xml",
    )


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


class NoStore:
    """`Cache-Control: no-store` on every HTTP answer (webhook answers carry stream tokens)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"cache-control"
                ]
                message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
            await send(message)

        await self.app(scope, receive, no_store)


class WorkerConfigError(RuntimeError):
    """A setting the worker cannot run without is missing or wrong."""


def hang_up_politely() -> Response:
    return _xml(f"<Say>{escape(SORRY)}</Say><Hangup/>")


def busy() -> Response:
    return _xml('<Reject reason="busy"/>')


def stopping() -> Response:
    """A webhook a stopping worker will not take: 503, so the phone provider's fallback URL
    or a retrying load balancer hands the call to another replica (busy would hang up)."""
    return Response(
        "this call worker is stopping\n",
        status_code=503,
        headers={"Retry-After": "1"},
        media_type="text/plain",
    )


def forbidden() -> Response:
    return Response("forbidden", status_code=403, media_type="text/plain")


async def authorize_stream(
    control_plane: ControlPlaneClient,
    agent_id: str,
    token: str | None,
    stream: AudioChannel = "phone",
) -> ClaimedCall | None:
    """The issued call this stream may run, or None. Claiming makes the token used."""
    if not token or len(token) > MAX_TOKEN_CHARS or not ID.fullmatch(agent_id):
        logger.warning("stream refused for agent %s: no usable stream token", agent_id[:64])
        return None
    try:
        return await control_plane.claim_call(token, agent_id, stream)
    except ControlPlaneError as exc:
        logger.warning("stream refused for agent %s: %s", agent_id[:64], exc.code)
        return None


def create_worker_app(
    settings: WorkerSettings | None = None,
    *,
    handlers: dict[str, EngineHandler] | None = None,
    tools_factory: Callable[[ResolvedSessionConfig], ToolRegistry] | None = None,
    telemetry: TelemetrySink | None = None,
) -> FastAPI:
    settings = settings or WorkerSettings()
    if settings.service_token is None:
        raise WorkerConfigError(
            "The call worker needs SWITCHBOARD_SERVICE_TOKEN (a service-scope token)."
        )
    service_token = settings.service_token.get_secret_value()
    engine_handlers = dict(handlers or {})
    public_url = settings.worker_public_url.rstrip("/")
    stream_base = (settings.worker_stream_url or public_url).rstrip("/")

    frame_limits = FrameLimits(
        media_stream_bytes=settings.media_stream_max_frame_bytes,
        browser_bytes=settings.browser_call_max_frame_bytes,
    )

    def tools_for(config: ResolvedSessionConfig) -> ToolRegistry:
        return (
            tools_factory(config) if tools_factory else ToolRegistry(settings.tool_timeout_seconds)
        )

    def new_session(
        workspace_id: str,
        agent_id: str,
        config: ResolvedSessionConfig | None = None,
        call: ClaimedCall | None = None,
        channel: AudioChannel = "phone",
    ) -> GrokRealtimeSession:
        return GrokRealtimeSession(
            channel=channel,
            control_plane_url=settings.control_plane_url,
            service_token=service_token,
            workspace_id=workspace_id,
            agent_id=agent_id,
            tools=tools_for(config) if config else None,
            telemetry=app.state.sink,
            config=config,
            http=app.state.http,
            call=call,
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        # One pooled HTTP client for the control plane: a call start must not pay for a new
        # client (its TLS context alone costs tens of milliseconds).
        # Idle connections are dropped before a server's usual 5 s keep-alive ends, so a
        # request rarely meets a connection the server is closing.
        limits = httpx.Limits(keepalive_expiry=4.0)
        async with BoundedClient(
            limits=limits, max_in_flight=settings.control_plane_max_concurrent_requests
        ) as http:
            app.state.http = http
            app.state.control_plane = ControlPlaneClient(
                settings.control_plane_url, service_token, http=http
            )
            app.state.sink = telemetry or HttpTelemetrySink(
                settings.control_plane_url, service_token, http=http
            )
            app.state.warm = WarmSessions(
                unclaimed_seconds=settings.warm_session_unclaimed_seconds,
                capacity=settings.max_warm_sessions,
                release=app.state.control_plane.release_call,
            )
            # Everything loaded so far lives as long as the process: keep it out of the
            # collector's full passes, which otherwise stall every call's audio for tens of
            # milliseconds (a few hundred on a small machine) each time they run.
            gc.collect()
            gc.freeze()
            app.state.loop_lag.start()
            app.state.gc_pauses.start()
            try:
                # With a drain time, a stopping worker first waits for the streams of the calls
                # it answered (serving.SwitchboardServer); without one it cuts its calls at once,
                # so there is nothing to wait for.
                state: dict[str, Any] = {FRAME_LIMITS: frame_limits}
                if settings.worker_drain_seconds:
                    state[STOP_GATE] = app.state.capacity
                yield state
            finally:
                await app.state.warm.aclose()
                await app.state.loop_lag.stop()
                app.state.gc_pauses.stop()

    app = FastAPI(title="Switchboard call worker", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.calls = []  # BridgeStats of finished calls, newest last (bounded)
    app.state.stream_start_timeout_seconds = settings.stream_start_timeout_seconds
    app.state.call_starts = Counter({"warm": 0, "cold": 0, "browser": 0})
    app.state.capacity = CallCapacity(
        settings.worker_max_calls, hold_seconds=settings.warm_session_unclaimed_seconds
    )
    app.state.pre_start = PreStartSockets(
        settings.worker_max_pre_start_sockets, settings.worker_max_pre_start_per_address
    )
    app.state.gc_pauses = GcPauses()
    app.state.metrics = WorkerMetrics(
        WorkerState(app.state),
        app.state.gc_pauses,
    )
    app.state.loop_lag = LoopLagMonitor(observe=app.state.metrics.observe_loop_lag)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> Response:
        """For a load balancer: 503 while this worker is at capacity or stopping (new calls go
        elsewhere)."""
        capacity: CallCapacity = app.state.capacity
        ready = capacity.has_room()
        body = {
            "status": "ready" if ready else "stopping" if capacity.stopping else "at_capacity",
            "calls": capacity.in_use,
            "max_calls": capacity.limit,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        """Prometheus text: warm sessions by outcome, call starts by path, event-loop lag."""
        if not metrics_allowed(settings, request.headers.get("authorization")):
            return Response("not found", status_code=404, media_type="text/plain")
        worker_metrics: WorkerMetrics = app.state.metrics
        return Response(worker_metrics.exposition(), media_type=CONTENT_TYPE)

    def stream_url(kind: str, agent_id: str, query: dict[str, str] | None = None) -> str:
        base = stream_base.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        return f"{base}/ws/{kind}/{agent_id}" + (f"?{urlencode(query)}" if query else "")

    async def issue(request: Request, agent_id: str, provider: str) -> IssuedCall | Response:
        """Hand the signed webhook to the control plane; a Response when the call is refused."""
        workspace_id = request.query_params.get("workspace_id", "")
        if not ID.fullmatch(agent_id) or not ID.fullmatch(workspace_id):
            logger.warning("%s webhook refused: malformed agent or workspace id", provider)
            return forbidden()
        raw = await request.body()  # at most MAX_WEBHOOK_BYTES, in time (BoundedBody)
        # The URL the provider requested: our public URL, this path, this query string.
        url = public_url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        params = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        webhook: dict[str, Any]
        if provider == "twilio":
            webhook = {
                "provider": "twilio",
                "url": url,
                "params": params,
                "signature": request.headers.get("x-twilio-signature", ""),
            }
        else:
            webhook = {
                "provider": "telnyx",
                "body_base64": base64.b64encode(raw).decode("ascii"),
                "timestamp": request.headers.get("telnyx-timestamp", ""),
                "signature": request.headers.get("telnyx-signature-ed25519", ""),
            }
        control_plane: ControlPlaneClient = request.app.state.control_plane
        capacity: CallCapacity = request.app.state.capacity
        with capacity.taken() as admitted:
            if not admitted and capacity.stopping:
                logger.info("%s call refused: worker stopping", provider)
                return stopping()
            if not admitted:
                logger.warning("%s call refused: worker at capacity", provider)
                return busy()
            try:
                issued = await control_plane.issue_call(
                    workspace_id,
                    agent_id,
                    channel=provider,
                    provider_call_id=params.get("CallSid") or params.get("CallControlId"),
                    webhook=webhook,
                )
            except ControlPlaneError as exc:
                logger.warning(
                    "%s call for %s/%s refused: %s (%s)",
                    provider,
                    workspace_id,
                    agent_id,
                    exc.code,
                    exc.message,
                )
                if exc.code.startswith("webhook_") or exc.status == 422:
                    return forbidden()
                if exc.status == 429:
                    return busy()
                return hang_up_politely()
            capacity.hold(issued.call_id)  # its place waits for the stream
            return issued

    async def set_up_warm(session: GrokRealtimeSession) -> None:
        session.config = await app.state.control_plane.session_config(
            session.workspace_id, session.agent_id
        )
        session.tools = tools_for(session.config)
        await session.prepare()

    def warm_up(issued: IssuedCall) -> None:
        """Set the call's xAI session up now, while the phone provider opens the stream; once
        per call (a webhook delivered again gets the same call, and opens no second session)."""
        if settings.warm_start and issued.engine == GROK_ENGINE and not issued.replayed:
            session = new_session(issued.workspace_id, issued.agent_id)
            session.telemetry.call_id = issued.call_id
            app.state.warm.begin(issued, session, set_up_warm)

    @app.post("/twiml/{agent_id}")
    async def twiml(agent_id: str, request: Request) -> Response:
        issued = await issue(request, agent_id, "twilio")
        if isinstance(issued, Response):
            return issued
        warm_up(issued)
        return _xml(
            f"<Connect><Stream url={quoteattr(stream_url('twilio', issued.agent_id))}>"
            f'<Parameter name="stream_token" value={quoteattr(issued.stream_token)}/>'
            "</Stream></Connect>"
        )

    @app.post("/texml/{agent_id}")
    async def texml(agent_id: str, request: Request) -> Response:
        issued = await issue(request, agent_id, "telnyx")
        if isinstance(issued, Response):
            return issued
        warm_up(issued)
        url = stream_url("telnyx", issued.agent_id, {"token": issued.stream_token})
        return _xml(f'<Connect><Stream url={quoteattr(url)} bidirectionalMode="rtp" /></Connect>')

    async def run_call(
        phone: WebSocket, dialect: Dialect, agent_id: str, url_token: str | None
    ) -> None:
        await phone.accept()
        start = await before_token(
            phone, agent_id, lambda: wait_for_start(StarlettePhone(phone), dialect, BridgeStats())
        )
        if start is None:
            await _close(phone, CLOSE_UNAUTHORIZED, UNAUTHORIZED)
            return
        stream_started = time.monotonic()
        control_plane: ControlPlaneClient = app.state.control_plane
        token = start.parameters.get("stream_token") or url_token
        capacity: CallCapacity = app.state.capacity
        if token and (warm := app.state.warm.take(agent_id, token)) is not None:
            with capacity.running(warm.issued.call_id):
                await run_warm(phone, dialect, start, warm, token, stream_started)
            return
        call = await authorize_stream(control_plane, agent_id, token)
        if call is None:
            await _close(phone, CLOSE_UNAUTHORIZED, UNAUTHORIZED)
            return
        with capacity.running(call.call_id):
            await run_cold(phone, dialect, start, call, stream_started)

    async def bridge_grok(
        phone: WebSocket, dialect: Dialect, start: Start, session: GrokRealtimeSession
    ) -> BridgeStats:
        """A Grok call's audio both ways, on its stream taken over where the server offers it."""
        taken = phone_socket(phone, session, settings.worker_drain_seconds)
        app.state.capacity.bridged(session.telemetry.call_id)
        return await bridge(taken, dialect, start, session)

    async def run_cold(
        phone: WebSocket, dialect: Dialect, start: Start, call: ClaimedCall, stream_started: float
    ) -> None:
        control_plane: ControlPlaneClient = app.state.control_plane
        try:
            config = await control_plane.session_config(call.workspace_id, call.agent_id)
        except ControlPlaneError as exc:
            logger.warning("call %s refused: %s", call.call_id, exc.code)
            await control_plane.end_call(call.call_id, exc.code)
            await _close(phone, CLOSE_REFUSED, f"{exc.code}: {exc.message}"[:120])
            return
        if config.engine != GROK_ENGINE:
            await run_other_engine(phone, dialect, start, config, call)
            return
        session = new_session(call.workspace_id, call.agent_id, config, call)
        session.stream_started_at, session.telemetry.warm_start = stream_started, False
        app.state.call_starts["cold"] += 1
        try:
            async with session:
                stats = await bridge_grok(phone, dialect, start, session)
                await finish(phone, session, stats)  # the phone first; the report follows
        except CallRefusedError as exc:
            await _close(phone, CLOSE_REFUSED, f"{exc.code}: {exc.message}"[:120])

    async def run_warm(
        phone: WebSocket,
        dialect: Dialect,
        start: Start,
        warm: WarmCall,
        token: str,
        stream_started: float,
    ) -> None:
        """Redeem the token the phone presented, then bridge. The claim goes out at `start`,
        while the warm set-up (xAI's socket, `session.update`) goes on in parallel; no audio
        moves either way until the control plane has said yes. What the phone presented is
        redeemed, not the token this worker holds: the control plane checks it on its own."""
        session = warm.session
        session.stream_started_at, session.telemetry.warm_start = stream_started, True
        app.state.call_starts["warm"] += 1
        try:
            call = await authorize_stream(app.state.control_plane, warm.issued.agent_id, token)
            if call is None:
                await session.refuse("stream_token_refused", "the control plane refused the token")
                await _close(phone, CLOSE_UNAUTHORIZED, UNAUTHORIZED)
                return
            await session.attach(call)
            stats = await bridge_grok(phone, dialect, start, session)
            await finish(phone, session, stats)  # the phone first; the report follows
        finally:
            warm.setup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warm.setup
            await session.cleanup()

    async def finish(phone: WebSocket, session: GrokRealtimeSession, stats: BridgeStats) -> None:
        app.state.calls = [*app.state.calls[-99:], stats]
        ended = session.ended
        if session.ready_at is None and ended is not None:  # the set-up failed
            await _close(phone, CLOSE_REFUSED, f"{ended.reason}: {ended.detail}"[:120])
            return
        await _close(phone, 1000, (ended.reason if ended else "ended")[:120])

    async def run_other_engine(
        phone: WebSocket,
        dialect: Dialect,
        start: Start,
        config: ResolvedSessionConfig,
        call: ClaimedCall,
    ) -> None:
        control_plane: ControlPlaneClient = app.state.control_plane
        handler = engine_handlers.get(config.engine)
        if handler is None:
            await control_plane.end_call(call.call_id, "no_handler")
            reason = f"no handler registered for engine {config.engine}"
            await _close(phone, CLOSE_REFUSED, reason[:120])
            return
        app.state.capacity.bridged(call.call_id)
        try:
            async with keep_lease(control_plane, call):
                await handler(phone, dialect, start, config)
        finally:
            await control_plane.end_call(call.call_id, "handler_done")

    async def before_token(
        socket: WebSocket, agent_id: str, read: Callable[[], Awaitable[Any]]
    ) -> Any:
        """`read()` (a stream's start, a browser's token) on a socket that has shown no token
        yet, within the start deadline and in a pre-start place (`PreStartSockets`), never a
        call place; None when it does not come in time, or the socket is refused or evicted."""
        pre_start: PreStartSockets = app.state.pre_start
        address = socket.client.host if socket.client else ""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(app.state.stream_start_timeout_seconds) as deadline:
                with pre_start.waiting(address, lambda: deadline.reschedule(loop.time())) as ok:
                    if not ok:
                        logger.warning("socket from %s refused: too many before a token", address)
                        return None
                    return await read()
        except TimeoutError:
            logger.warning("socket for agent %s closed: no token in time", agent_id[:64])
            return None

    async def run_browser_call(websocket: WebSocket, agent_id: str) -> None:
        """A test call from the agent page: the browser sends its single-use token first, then
        PCM16 24 kHz audio; the same call as a phone's, reported as a test call. It takes a
        call place only once the control plane has redeemed its token."""
        await websocket.accept()
        capacity: CallCapacity = app.state.capacity
        if not capacity.has_room():  # refused at once: the page keeps its token for later
            capacity.count_refusal()
            await refuse_for_capacity(websocket, agent_id)
            return
        browser = StarlettePhone(websocket)
        token = await before_token(websocket, agent_id, lambda: wait_for_token(browser))
        started = time.monotonic()
        control_plane: ControlPlaneClient = app.state.control_plane
        call = await authorize_stream(control_plane, agent_id, token, stream="browser")
        if call is None:
            await refuse_browser(
                websocket,
                CLOSE_UNAUTHORIZED,
                UNAUTHORIZED,
                "This test call's token is not valid: it expired or was used. Start a new call.",
            )
            return
        with capacity.taken() as admitted:
            if admitted:
                await run_browser_call_admitted(websocket, browser, call, started)
                return
        await control_plane.end_call(call.call_id, AT_CAPACITY)
        await refuse_for_capacity(websocket, agent_id)

    async def refuse_for_capacity(websocket: WebSocket, agent_id: str) -> None:
        capacity: CallCapacity = app.state.capacity
        if capacity.stopping:
            await refuse_browser(websocket, CLOSE_REFUSED, STOPPING, STOPPING_MESSAGE)
            return
        logger.warning("browser call for agent %s refused: worker at capacity", agent_id[:64])
        await refuse_browser(websocket, CLOSE_REFUSED, AT_CAPACITY, AT_CAPACITY_MESSAGE)

    async def run_browser_call_admitted(
        websocket: WebSocket, browser: StarlettePhone, call: ClaimedCall, started: float
    ) -> None:
        control_plane: ControlPlaneClient = app.state.control_plane
        try:
            config = await control_plane.session_config(
                call.workspace_id, call.agent_id, channel="browser"
            )
        except ControlPlaneError as exc:
            await control_plane.end_call(call.call_id, exc.code)
            await refuse_browser(websocket, CLOSE_REFUSED, exc.code, exc.message)
            return
        if config.engine != GROK_ENGINE:
            await control_plane.end_call(call.call_id, "engine_mismatch")
            detail = f"This agent's tier runs on {config.engine}; browser calls run on Grok."
            await refuse_browser(websocket, CLOSE_REFUSED, "engine_mismatch", detail)
            return
        session = new_session(call.workspace_id, call.agent_id, config, call, channel="browser")
        session.stream_started_at, session.telemetry.warm_start = started, False
        app.state.call_starts["browser"] += 1
        stats = BrowserStats()
        try:
            async with session:
                await browser.send_text(
                    message("ready", audio=config.session.audio.input.format.model_dump())
                )
                # Taken over like a phone's stream: drained, and told, when the worker stops.
                taken = phone_socket(websocket, session, settings.worker_drain_seconds)
                stats = await bridge_browser(taken, session)
                ended = session.ended
                await _close(websocket, 1000, (ended.reason if ended else "ended")[:120])
        except CallRefusedError as exc:
            await refuse_browser(websocket, CLOSE_REFUSED, exc.code, exc.message)
        except PhoneGone:
            pass  # the page closed while the session was being set up
        logger.info(
            "browser call %s: %d frames in, %d out", call.call_id, stats.frames_in, stats.frames_out
        )

    async def refuse_browser(websocket: WebSocket, code: int, reason: str, detail: str) -> None:
        """Say why on the page (the close reason alone is not shown to people), then close."""
        with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
            await websocket.send_text(message("error", code=reason, message=detail))
        await _close(websocket, code, reason[:120])

    @app.websocket("/ws/realtime/{agent_id}")
    async def realtime(websocket: WebSocket, agent_id: str) -> None:
        await run_browser_call(websocket, agent_id)

    app.add_middleware(MediaStreams, handle=run_call)

    app.add_middleware(NoStore)
    # Outermost: a webhook body is bounded in size and time before anything reads it.
    app.add_middleware(
        BoundedBody,
        max_bytes=MAX_WEBHOOK_BYTES,
        timeout_seconds=settings.worker_body_timeout_seconds,
        refuse=refuse_body,
    )
    return app


async def refuse_body(problem: BodyProblem, send: Send) -> None:
    """A webhook body over its bounds: 403 for one too large (as for any webhook we will not
    take: the provider does not retry it), 408 for one too slow, 400 for a bad length."""
    logger.warning("webhook refused: %s", problem)
    status = {"request_too_large": 403, "body_timeout": 408, "invalid_content_length": 400}
    body = f"{problem}\n".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status[problem], "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _close(phone: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # the phone may have gone
        await phone.close(code, reason)
