"""Prometheus metrics for one app instance (its own registry: no process-wide globals).

HTTP latency and status per route, session-config outcomes by code, flag evaluations, config
cache hits, and per flag the calls and SLO figures of the guard's current window.
"""

import math
import time
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.rollout.gate import FlagGate
from control_plane.sessions.cache import ConfigCache

REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
# The buckets' `le` labels, as prometheus_client writes them ("1.0", "+Inf").
REQUEST_BUCKET_LABELS: list[str] = [
    floatToGoString(bound)  # type: ignore[no-untyped-call]
    for bound in (*REQUEST_BUCKETS, math.inf)
]
RequestLabels = tuple[str, str, int]  # method, route, status


class RequestDurations(Collector):
    """HTTP request latency by method, route and status: a Prometheus histogram.

    prometheus_client's `Histogram` takes a lock twice per observation (its sum, its bucket),
    for threads; requests are observed on the event loop's thread only, where plain counts do
    at a fraction of the cost on every request. A scrape may run on another thread (the route
    is sync): it reads a copy of the series (one C call under the GIL), as the library's own
    histogram does, each count as it is at that moment."""

    name = "switchboard_http_request_duration_seconds"

    def __init__(self) -> None:
        # Per labels: the count of each bucket (the last one +Inf), then the sum of seconds.
        self.series: dict[RequestLabels, list[float]] = {}

    def observe(self, labels: RequestLabels, seconds: float) -> None:
        counts = self.series.get(labels)
        if counts is None:
            counts = self.series[labels] = [0.0] * (len(REQUEST_BUCKETS) + 2)
        counts[bisect_left(REQUEST_BUCKETS, seconds)] += 1  # the first bucket with le >= seconds
        counts[-1] += seconds

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            self.name,
            "HTTP request latency by route and status",
            labels=["method", "route", "status"],
        )
        for (method, route, status), counts in list(self.series.items()):
            cumulative = accumulate(counts[:-1])
            family.add_metric(
                [method, route, str(status)],
                list(zip(REQUEST_BUCKET_LABELS, cumulative, strict=True)),
                counts[-1],
            )
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_duration = RequestDurations()
        self.registry.register(self.http_duration)
        self.session_config = Counter(
            "switchboard_session_config_total",
            "Session-config answers by outcome (ok, stale, or the problem code)",
            ["outcome"],
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_duration.observe((method, route, status), seconds)

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
