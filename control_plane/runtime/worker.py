"""The call worker: phone numbers point here, and each call runs on the engine its agent's tier
resolves to. grok-realtime runs on GrokRealtimeSession; other engines run on handlers the host
backend registers; with no handler the call is refused with a clear message. Never a fallback.
"""

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import quoteattr

import httpx
from fastapi import FastAPI, Query, Request, Response, WebSocket
from starlette.websockets import WebSocketDisconnect

from control_plane.runtime.session import (
    GROK_ENGINE,
    CallRefusedError,
    GrokRealtimeSession,
    HttpTelemetrySink,
    SessionConfigError,
    TelemetrySink,
    fetch_session_config,
)
from control_plane.runtime.telephony import (
    DIALECTS,
    BridgeStats,
    Dialect,
    Start,
    bridge,
    wait_for_start,
)
from control_plane.runtime.tools import ToolRegistry
from control_plane.settings import Settings

logger = logging.getLogger(__name__)

# A host backend's handler for another engine: (phone socket, dialect, start, resolved config).
EngineHandler = Callable[[WebSocket, Dialect, Start, dict[str, Any]], Awaitable[None]]

# Close codes the phone side sees (application range 4000-4999).
CLOSE_REFUSED = 4403
CLOSE_FAILED = 4500


def create_worker_app(
    settings: Settings | None = None,
    *,
    handlers: dict[str, EngineHandler] | None = None,
    tools_factory: Callable[[dict[str, Any]], ToolRegistry] | None = None,
    telemetry: TelemetrySink | None = None,
) -> FastAPI:
    settings = settings or Settings()
    if settings.service_token is None:
        raise RuntimeError(
            "The call worker needs SWITCHBOARD_SERVICE_TOKEN (a service-scope token)."
        )
    service_token = settings.service_token.get_secret_value()
    engine_handlers = dict(handlers or {})

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One pooled HTTP client for config pulls and telemetry: a call start must not pay for
        # a new client (its TLS context alone costs tens of milliseconds).
        async with httpx.AsyncClient() as http:
            app.state.http = http
            app.state.sink = telemetry or HttpTelemetrySink(
                settings.control_plane_url, service_token, http=http
            )
            yield

    app = FastAPI(title="Switchboard call worker", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.calls = []  # BridgeStats of finished calls, newest last (bounded)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def stream_url(kind: str, agent_id: str, workspace_id: str) -> str:
        base = settings.worker_public_url.replace("http://", "ws://").replace("https://", "wss://")
        return (
            f"{base.rstrip('/')}/ws/{kind}/{agent_id}?{urlencode({'workspace_id': workspace_id})}"
        )

    @app.post("/twiml/{agent_id}")
    def twiml(agent_id: str, workspace_id: str = Query(min_length=1, max_length=64)) -> Response:
        url = stream_url("twilio", agent_id, workspace_id)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
            f"<Stream url={quoteattr(url)}>"
            f'<Parameter name="workspace_id" value={quoteattr(workspace_id)}/></Stream>'
            "</Connect></Response>"
        )
        return Response(body, media_type="application/xml")

    @app.post("/texml/{agent_id}")
    def texml(agent_id: str, workspace_id: str = Query(min_length=1, max_length=64)) -> Response:
        url = stream_url("telnyx", agent_id, workspace_id)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
            f'<Stream url={quoteattr(url)} bidirectionalMode="rtp" /></Connect></Response>'
        )
        return Response(body, media_type="application/xml")

    async def run_call(
        phone: WebSocket, dialect: Dialect, agent_id: str, workspace_id: str | None
    ) -> None:
        await phone.accept()
        start = await wait_for_start(phone, dialect, BridgeStats())
        if start is None:
            return
        workspace = start.parameters.get("workspace_id") or workspace_id
        if not workspace:
            await phone.close(CLOSE_REFUSED, "workspace_id missing")
            return
        try:
            config = await fetch_session_config(
                settings.control_plane_url, service_token, workspace, agent_id
            )
        except SessionConfigError as exc:
            logger.warning("call refused for %s/%s: %s", workspace, agent_id, exc.code)
            await phone.close(CLOSE_REFUSED, f"{exc.code}: {exc.message}"[:120])
            return
        engine = config["engine"]
        if engine != GROK_ENGINE:
            handler = engine_handlers.get(engine)
            if handler is None:
                await phone.close(CLOSE_REFUSED, f"no handler registered for engine {engine}"[:120])
                return
            await handler(phone, dialect, start, config)
            return
        tools = (
            tools_factory(config) if tools_factory else ToolRegistry(settings.tool_timeout_seconds)
        )
        session = GrokRealtimeSession(
            control_plane_url=settings.control_plane_url,
            service_token=service_token,
            workspace_id=workspace,
            agent_id=agent_id,
            tools=tools,
            telemetry=app.state.sink,
            config=config,
            http=app.state.http,
            call_id=start.call_id or None,
        )
        try:
            async with session:
                stats = await bridge(phone, dialect, start, session)
        except CallRefusedError as exc:
            await phone.close(CLOSE_REFUSED, f"{exc.code}: {exc.message}"[:120])
            return
        app.state.calls = [*app.state.calls[-99:], stats]
        ended = session.ended
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # the phone may have gone
            await phone.close(1000, (ended.reason if ended else "ended")[:120])

    @app.websocket("/ws/twilio/{agent_id}")
    async def twilio(phone: WebSocket, agent_id: str, workspace_id: str | None = None) -> None:
        await run_call(phone, DIALECTS["twilio"], agent_id, workspace_id)

    @app.websocket("/ws/telnyx/{agent_id}")
    async def telnyx(phone: WebSocket, agent_id: str, workspace_id: str | None = None) -> None:
        await run_call(phone, DIALECTS["telnyx"], agent_id, workspace_id)

    @app.middleware("http")
    async def no_cache(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        return response

    return app
