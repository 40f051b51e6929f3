"""The FastAPI application factory: settings, database, routers, middleware, lifespan."""

import asyncio
import contextlib
import functools
import gc
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp

from control_plane.audit.api import router as audit_router
from control_plane.auth.api import router as tokens_router
from control_plane.auth.cache import TokenCache
from control_plane.auth.deps import SignInRequired
from control_plane.auth.pages import router as sign_in_pages
from control_plane.auth.passwords import Passwords
from control_plane.auth.service import TOKENS_TOPIC, reverify_cached_token
from control_plane.auth.throttle import ThrottlePolicy
from control_plane.calls.api import router as calls_router
from control_plane.calls.service import CallPolicy
from control_plane.catalogue.api import router as catalogue_router
from control_plane.catalogue.pages import router as catalogue_pages
from control_plane.catalogue.reads import CatalogueReads
from control_plane.catalogue.snapshot import CatalogueSnapshot
from control_plane.changes import RESYNC, ChangeFeed
from control_plane.db import make_engine, read_only, session_scope, write_gate
from control_plane.deps import SessionDep
from control_plane.errors import NotFoundError, document_problems, install_error_handlers
from control_plane.insights.api import router as insights_router
from control_plane.insights.pages import router as insights_pages
from control_plane.kept import Generations
from control_plane.keys.api import router as keys_router
from control_plane.keys.crypto import Keyring
from control_plane.keys.pages import router as keys_pages
from control_plane.maintenance import run_forever as run_maintenance
from control_plane.middleware import (
    RequestLimits,
    document_nul_refusal,
    install_cors,
    install_middleware,
)
from control_plane.outbound import OutboundPolicy
from control_plane.ratelimit import SlidingWindowLimit
from control_plane.releases.api import router as releases_router
from control_plane.releases.pages import router as releases_pages
from control_plane.resources import resource_dir
from control_plane.rollout.api import client_router as unleash_client_router
from control_plane.rollout.api import router as rollout_router
from control_plane.rollout.gate import FlagGate
from control_plane.rollout.pages import router as rollout_pages
from control_plane.rollout.service import seed_flags
from control_plane.sessions.api import router as sessions_router
from control_plane.sessions.cache import ConfigCache, ConfigParts
from control_plane.sessions.ephemeral import EphemeralSecrets
from control_plane.sessions.fastpath import HotReads
from control_plane.sessions.service import Resolver, rebuild_in_memory
from control_plane.settings import Settings, metrics_allowed, production_refusals
from control_plane.telemetry.api import router as telemetry_router
from control_plane.telemetry.looks import GuardLooks
from control_plane.telemetry.metrics import HttpMetricsMiddleware, Metrics, StateCollector
from control_plane.web.rendering import problem_page, sign_in_first
from control_plane.web.rendering import router as web_router
from control_plane.workspaces.api import router as workspaces_router
from control_plane.workspaces.cache import AgentPages
from control_plane.workspaces.pages import router as workspaces_pages
from switchboard_runtime.logging import configure_logging
from switchboard_runtime.worker.serving import INSTANT_ANSWERS

logger = logging.getLogger(__name__)


def start_flags(engine: Engine, gate: FlagGate) -> None:
    """First start loads flags/ into the database; then the gate loads the database."""
    with session_scope(engine) as session:
        seed_flags(session)
    gate.sync_server()
    gate.reload()


STATIC_DIR = resource_dir("templates") / "static"


def session_secret(settings: Settings) -> str:
    """The key that signs session cookies: from settings; outside production a per-process one."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value()
    return secrets.token_urlsafe(32)


def docs_public(settings: Settings) -> bool:
    if settings.public_docs is not None:
        return settings.public_docs
    return settings.environment != "production"


def call_policy(settings: Settings, keyring: Keyring) -> CallPolicy:
    secret = settings.stream_token_secret
    return CallPolicy(
        stream_token_key=secret.get_secret_value().encode()
        if secret is not None
        else keyring.derive_key("switchboard stream tokens v1"),
        stream_token_ttl_seconds=settings.stream_token_ttl_seconds,
        lease_seconds=settings.call_lease_seconds,
        twilio_auth_token=settings.twilio_auth_token.get_secret_value()
        if settings.twilio_auth_token is not None
        else None,
        telnyx_public_key=settings.telnyx_public_key,
    )


class SwitchboardApp(FastAPI):
    """FastAPI, with the hot reads' lane (`sessions/fastpath.HotReads`) in front of every layer:
    set `hot_reads` to wrap the app's stack once it is built (`hot_lane`, from then on)."""

    hot_reads: Callable[[ASGIApp], HotReads] | None = None
    hot_lane: HotReads | None = None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if self.hot_reads is None:
            return stack
        self.hot_lane = self.hot_reads(stack)
        return self.hot_lane


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, ("control_plane", "switchboard_runtime"))

    @asynccontextmanager
    async def lifespan(app: SwitchboardApp) -> AsyncIterator[dict[str, Any]]:
        app.state.write_gate = write_gate(settings)
        start_flags(app.state.engine, app.state.flag_gate)
        app.state.change_feed.start()
        # Everything loaded so far lives as long as the process: keep it out of GC passes,
        # which otherwise show up as latency spikes on the hot path.
        gc.collect()
        gc.freeze()
        maintenance = None
        if settings.maintenance_interval_seconds > 0:
            maintenance = asyncio.create_task(
                run_maintenance(
                    settings.maintenance_interval_seconds,
                    app.state.engine,
                    app.state.flag_gate,
                    app.state.outbound_policy,
                ),
                name="maintenance",
            )
        # The HTTP server (`switchboard serve`) answers known hot reads as they arrive.
        yield {} if app.hot_lane is None else {INSTANT_ANSWERS: app.hot_lane.answer_now}
        if maintenance is not None:
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance
        app.state.change_feed.stop()
        app.state.flag_gate.close()
        app.state.engine.dispose()

    public = docs_public(settings)
    app = SwitchboardApp(
        title="Switchboard",
        version="0.1.0",
        summary="Control plane for voice agents on several realtime providers.",
        lifespan=lifespan,
        docs_url="/docs" if public else None,
        redoc_url="/redoc" if public else None,
        openapi_url="/openapi.json" if public else None,
    )
    refusals = production_refusals(settings)
    if refusals:
        raise RuntimeError(" ".join(refusals))
    app.state.settings = settings
    app.state.throttle_policy = ThrottlePolicy.from_settings(settings)
    app.state.outbound_policy = OutboundPolicy.from_settings(settings)
    app.state.guard_looks = GuardLooks(settings.guard_look_interval_seconds)
    app.state.key_verifications = SlidingWindowLimit(settings.key_verifications_per_hour, 3600)
    app.state.password_hashing = threading.BoundedSemaphore(settings.max_concurrent_password_hashes)
    app.state.passwords = Passwords(settings.password_hash_cost)
    app.state.engine = make_engine(settings)
    app.state.read_engine = read_only(app.state.engine)
    app.state.keyring = Keyring.from_settings(settings)
    app.state.call_policy = call_policy(settings, app.state.keyring)
    app.state.change_feed = feed = ChangeFeed(settings)
    app.state.flag_gate = gate = FlagGate(settings, app.state.engine, feed)
    app.state.token_cache = token_cache = TokenCache()
    # Every kept answer below is checked against these counters (kept.py, docs/caches.md).
    app.state.generations = generations = Generations(gate)
    catalogue = CatalogueSnapshot(generations, app.state.read_engine)
    feed.subscribe(catalogue.on_change)  # moves the counters, the catalogue's with it in hand
    app.state.resolver = resolver = Resolver(
        settings=settings,
        keyring=app.state.keyring,
        gate=gate,
        secrets=EphemeralSecrets(settings),
        catalogue=catalogue,
        parts=ConfigParts(generations, settings.config_cache_size),
    )
    app.state.config_cache = config_cache = ConfigCache(
        generations, settings.config_cache_size, revalidate=resolver.still_holds
    )
    app.state.catalogue_reads = CatalogueReads(catalogue, generations)
    app.state.agent_pages = agent_pages = AgentPages(generations)
    feed.subscribe(lambda topic: token_cache.clear() if topic == TOKENS_TOPIC else None)
    feed.subscribe(lambda topic: token_cache.require_reverification() if topic == RESYNC else None)

    install_error_handlers(app, page=problem_page)
    app.add_exception_handler(SignInRequired, sign_in_first)
    document_problems(app, refinements=[document_nul_refusal])
    client_tokens = [
        t.strip().encode()
        for t in (
            settings.client_api_tokens.get_secret_value() if settings.client_api_tokens else ""
        ).split(",")
        if t.strip()
    ]
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings),
        session_cookie="switchboard_session",
        same_site="lax",
        https_only=settings.environment == "production",
        max_age=settings.session_absolute_hours * 3600,
    )
    install_middleware(app, settings)
    app.state.metrics = metrics = Metrics()
    metrics.registry.register(StateCollector(app.state.engine, gate, config_cache))
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    install_cors(app, settings)  # last of the middleware: the outermost layer
    app.hot_reads = functools.partial(  # in front of all of it
        HotReads,
        limits=RequestLimits.from_settings(settings),
        cors=bool(settings.cors_origin_list),
        metrics=metrics,
        config_cache=config_cache,
        token_cache=token_cache,
        gate=gate,
        client_tokens=client_tokens,
        catalogue_reads=app.state.catalogue_reads,
        agent_pages=agent_pages,
        rebuild_config=functools.partial(rebuild_in_memory, resolver, config_cache),
        reverify_token=functools.partial(reverify_cached_token, app.state.engine, token_cache),
    )
    app.include_router(tokens_router)
    app.include_router(catalogue_router)
    app.include_router(workspaces_router)
    app.include_router(keys_router)
    app.include_router(audit_router)
    app.include_router(rollout_router)
    app.include_router(unleash_client_router)
    app.include_router(sessions_router)
    app.include_router(calls_router)
    app.include_router(telemetry_router)
    app.include_router(releases_router)
    app.include_router(insights_router)
    pages = (
        web_router,
        sign_in_pages,
        catalogue_pages,
        keys_pages,
        workspaces_pages,
        rollout_pages,
        releases_pages,
        insights_pages,
    )
    for page_router in pages:
        app.include_router(page_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def prometheus_metrics(request: Request) -> PlainTextResponse:
        if not metrics_allowed(settings, request.headers.get("authorization")):
            raise NotFoundError("Not found.", code="not_found")
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=None)
    def readyz(session: SessionDep) -> JSONResponse:
        from sqlalchemy import text

        session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        return JSONResponse({"status": "ready", "database": "ok"})

    return app
