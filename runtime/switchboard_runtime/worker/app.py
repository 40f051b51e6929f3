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

The parts, in the order a call meets them: `answers` (the webhook and its answer), `calls`
(a phone call's life, from its stream's start to its report), `browser_calls` (test calls from
an agent's page), `streams` (the call's socket to the phone). This module assembles them: the
app's shared objects, its start and stop, and thin routes.
"""

import contextlib
import functools
import gc
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switchboard_runtime.client import BoundedClient, ControlPlaneClient
from switchboard_runtime.contract import ResolvedSessionConfig
from switchboard_runtime.logging import RepeatedWarnings
from switchboard_runtime.loop_lag import GcPauses, LoopLagMonitor
from switchboard_runtime.session import HttpTelemetrySink, TelemetrySink
from switchboard_runtime.tools import ToolRegistry
from switchboard_runtime.warm import WarmSessions
from switchboard_runtime.worker.answers import MAX_WEBHOOK_BYTES, CallEntry, refuse_body
from switchboard_runtime.worker.bounded_body import BoundedBody
from switchboard_runtime.worker.browser_calls import BrowserCalls
from switchboard_runtime.worker.calls import CallRunner, EngineHandler
from switchboard_runtime.worker.capacity import CallCapacity, PreStartSockets
from switchboard_runtime.worker.media_plane import FrameLimits, MediaPlane
from switchboard_runtime.worker.metrics import CONTENT_TYPE, WorkerMetrics, WorkerState
from switchboard_runtime.worker.native_relays import AudioFrames
from switchboard_runtime.worker.serving import STOP_GATE
from switchboard_runtime.worker.settings import WorkerSettings, metrics_allowed
from switchboard_runtime.worker.streams import MediaStreams, StarletteSocket
from switchboard_runtime.worker.webhook_budget import WebhookRefusalBudget

logger = logging.getLogger(__name__)

__all__ = ["EngineHandler", "WorkerConfigError", "create_worker_app"]


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
            media_plane: MediaPlane | None = app.state.media_plane
            try:
                if media_plane is not None:
                    await media_plane.start()
                # With a drain time, a stopping worker first waits for the streams of the calls
                # it answered (serving.SwitchboardServer); without one it cuts its calls at once,
                # so there is nothing to wait for.
                state: dict[str, Any] = {}
                if settings.worker_drain_seconds:
                    state[STOP_GATE] = app.state.capacity
                yield state
            finally:
                if media_plane is not None:
                    await media_plane.stop()  # live calls drain, then end as worker_shutdown
                await app.state.warm.aclose()
                await app.state.loop_lag.stop()
                app.state.gc_pauses.stop()

    app = FastAPI(title="Switchboard call worker", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.calls = []  # BridgeStats of finished calls, newest last (bounded)
    app.state.stream_start_timeout_seconds = settings.stream_start_timeout_seconds
    app.state.call_starts = Counter({"warm": 0, "cold": 0, "browser": 0})
    app.state.audio_frames = AudioFrames()
    app.state.capacity = CallCapacity(
        settings.worker_max_calls, hold_seconds=settings.warm_session_unclaimed_seconds
    )
    app.state.pre_start = PreStartSockets(
        settings.worker_max_pre_start_sockets, settings.worker_max_pre_start_per_address
    )
    app.state.webhook_budget = WebhookRefusalBudget(
        settings.worker_max_webhook_refusals_per_address
    )
    app.state.gc_pauses = GcPauses()
    # Refusals anyone on the network can cause: each kind logged at most once a minute.
    app.state.refusals = RepeatedWarnings(logger)
    lag_interval = settings.worker_loop_lag_interval_seconds
    app.state.metrics = WorkerMetrics(
        WorkerState(app.state), app.state.gc_pauses, loop_lag_interval=lag_interval
    )
    app.state.loop_lag = LoopLagMonitor(
        interval=lag_interval, observe=app.state.metrics.observe_loop_lag
    )

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

    runner = CallRunner(
        settings,
        app.state,
        service_token=service_token,
        handlers=engine_handlers,
        tools_factory=tools_factory,
    )
    browser_calls = BrowserCalls(runner)
    app.state.media_plane = media_plane_for(settings, runner, browser_calls)
    entry = CallEntry(settings, runner, app.state.media_plane)

    @app.post("/twiml/{agent_id}")
    async def twiml(agent_id: str, request: Request) -> Response:
        return await entry.twiml(request, agent_id)

    @app.post("/texml/{agent_id}")
    async def texml(agent_id: str, request: Request) -> Response:
        return await entry.texml(request, agent_id)

    if app.state.media_plane is None:  # call sockets through this app's own server

        @app.websocket("/ws/realtime/{agent_id}")
        async def realtime(websocket: WebSocket, agent_id: str) -> None:
            await browser_calls.run(await StarletteSocket.accept(websocket), agent_id)

        app.add_middleware(MediaStreams, handle=runner.run_phone_stream)

    app.add_middleware(NoStore)
    # Outermost: a webhook body is bounded in size and time before anything reads it.
    app.add_middleware(
        BoundedBody,
        max_bytes=MAX_WEBHOOK_BYTES,
        timeout_seconds=settings.worker_body_timeout_seconds,
        refuse=functools.partial(refuse_body, app.state.refusals),
    )
    return app


def media_plane_for(
    settings: WorkerSettings, runner: CallRunner, browser_calls: BrowserCalls
) -> MediaPlane | None:
    """The worker's own listener for call sockets, or None (SWITCHBOARD_WORKER_MEDIA_PORT
    unset: the app's server carries them)."""
    if settings.worker_media_port is None:
        return None
    return MediaPlane(
        host=settings.worker_media_host,
        port=settings.worker_media_port,
        limits=FrameLimits(
            media_stream_bytes=settings.media_stream_max_frame_bytes,
            browser_bytes=settings.browser_call_max_frame_bytes,
        ),
        handshake_timeout_seconds=settings.http_header_timeout_seconds,
        trusted_proxies=settings.trusted_proxy_networks,
        phone=runner.run_phone_stream,
        browser=browser_calls.run,
    )
