"""Prometheus metrics for one app instance (its own registry: no process-wide globals).

HTTP latency and status per route, session-config outcomes by code, flag evaluations, config
cache hits, and per flag the calls and SLO figures of the guard's current window.
"""

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.rollout.gate import FlagGate
from control_plane.sessions.cache import ConfigCache


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_duration = Histogram(
            "switchboard_http_request_duration_seconds",
            "HTTP request latency by route and status",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        # The histogram's series by labels: looking one up costs a lock and a tuple per request.
        self._series: dict[tuple[str, str, int], Any] = {}
        self.session_config = Counter(
            "switchboard_session_config_total",
            "Session-config answers by outcome (ok, stale, or the problem code)",
            ["outcome"],
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        series = self._series.get((method, route, status))
        if series is None:
            series = self.http_duration.labels(method, route, str(status))
            self._series[(method, route, status)] = series
        series.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class StateCollector(Collector):
    """Read at scrape time: cache and flag counters, and rollout health from the database."""

    def __init__(self, engine: Engine, gate: FlagGate, cache: ConfigCache) -> None:
        self.engine, self.gate, self.cache = engine, gate, cache

    def collect(self) -> Iterator[Any]:
        cache = CounterMetricFamily(
            "switchboard_config_cache", "Session-config cache lookups", labels=["result"]
        )
        cache.add_metric(["hit"], self.cache.hits)
        cache.add_metric(["miss"], self.cache.misses)
        yield cache
        evaluations = CounterMetricFamily(
            "switchboard_flag_evaluations", "Flag decisions made", labels=["flag", "enabled"]
        )
        for (flag, enabled), count in sorted(self.gate.evaluations.items()):
            evaluations.add_metric([flag, str(enabled).lower()], count)
        yield evaluations
        yield from self._rollout_health()

    def _rollout_health(self) -> Iterator[Any]:
        from control_plane.rollout import service as rollout
        from control_plane.telemetry import service as telemetry

        calls = GaugeMetricFamily(
            "switchboard_rollout_calls", "Calls in the guard window", labels=["flag", "cohort"]
        )
        slo = GaugeMetricFamily(
            "switchboard_rollout_slo",
            "SLO figures in the guard window",
            labels=["flag", "cohort", "metric"],
        )
        workspaces = GaugeMetricFamily(
            "switchboard_rollout_workspaces",
            "Workspaces the counted calls in the guard window came from",
            labels=["flag", "cohort"],
        )
        largest_share = GaugeMetricFamily(
            "switchboard_rollout_largest_workspace_share",
            "Share of the counted calls in the guard window from the workspace with the most",
            labels=["flag", "cohort"],
        )
        try:
            with Session(self.engine) as session:
                for flag in rollout.list_flags(session):
                    report = telemetry.health(session, flag.name)
                    for cohort, figures in [("all", report.overall), *report.cohorts.items()]:
                        calls.add_metric([flag.name, cohort], figures.calls)
                        if figures.evidence is not None:
                            evidence = figures.evidence
                            workspaces.add_metric([flag.name, cohort], evidence.workspaces)
                            if evidence.largest_share is not None:
                                largest_share.add_metric(
                                    [flag.name, cohort], evidence.largest_share
                                )
                        for name in (
                            "first_audio_p95",
                            "tool_call_success",
                            "call_completion",
                            "websocket_stability",
                        ):
                            value = getattr(figures, name).value
                            if value is not None:
                                slo.add_metric([flag.name, cohort, name], value)
                session.rollback()  # health() may create default guards: a scrape writes nothing
        except OperationalError:
            pass  # the database is away: serve the other metrics
        yield calls
        yield slo
        yield workspaces
        yield largest_share


class HttpMetricsMiddleware:
    """Times every request the hot reads' lane passes on (it times its own), labelled by route
    template, not raw path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_request(
                scope["method"], route, status[0], time.perf_counter() - started
            )
