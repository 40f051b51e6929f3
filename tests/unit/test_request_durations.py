"""The request-latency histogram the control plane keeps itself (`RequestDurations`, plain
counts on the event loop's thread) renders what prometheus_client's own `Histogram` renders for
the same observations: same buckets, counts, sums and labels."""

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from control_plane.telemetry.metrics import REQUEST_BUCKETS, Metrics

ROUTES = ["/api/v1/tiers", "/api/v1/workspaces/{workspace_id}/agents/{agent_id}/session-config"]


def rendered(text: bytes) -> list[str]:
    """The histogram's lines, without the `_created` timestamps only the library's one has."""
    return [
        line
        for line in text.decode().splitlines()
        if "http_request_duration" in line and "_created" not in line
    ]


def test_the_same_exposition_as_prometheus_clients_histogram() -> None:
    ours = Metrics()
    registry = CollectorRegistry()
    oracle = Histogram(
        "switchboard_http_request_duration_seconds",
        "HTTP request latency by route and status",
        ["method", "route", "status"],
        registry=registry,
        buckets=REQUEST_BUCKETS,
    )
    rng = random.Random(34)
    # Every bound exactly (le is inclusive), just past it, zero, and past the last bucket.
    samples = [*REQUEST_BUCKETS, *(b * 1.0001 for b in REQUEST_BUCKETS), 0.0, 7.5]
    samples += [rng.expovariate(400) for _ in range(2_000)]
    for seconds in samples:
        method = rng.choice(["GET", "POST"])
        route = rng.choice(ROUTES)
        status = rng.choice([200, 304, 404])
        ours.observe_request(method, route, status, seconds)
        oracle.labels(method, route, str(status)).observe(seconds)

    expected = rendered(generate_latest(registry))
    assert len(expected) > 12 * 10  # buckets, counts and sums of several series
    assert rendered(ours.render()) == expected


def test_nothing_observed_renders_the_family_alone() -> None:
    assert rendered(Metrics().render()) == [
        "# HELP switchboard_http_request_duration_seconds HTTP request latency by route and status",
        "# TYPE switchboard_http_request_duration_seconds histogram",
    ]
