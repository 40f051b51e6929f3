"""The worker's requests to the control plane: at most SWITCHBOARD_CONTROL_PLANE_MAX_CONCURRENT_
REQUESTS in flight, however many calls start or end at once (bench/control_plane_burst.py has the
cost of an unbounded burst)."""

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from switchboard_runtime.client import BoundedClient, ControlPlaneClient, ControlPlaneError
from tests.fakes.server import BackgroundServer, free_port

LIMITS = httpx.Limits(keepalive_expiry=4.0)


@dataclass
class SlowControlPlane:
    url: str
    in_flight: int = 0
    most_in_flight: int = 0


@pytest.fixture
def control_plane() -> Iterator[SlowControlPlane]:
    state = SlowControlPlane(url="")

    async def answer(request: Request) -> JSONResponse:
        state.in_flight += 1
        state.most_in_flight = max(state.most_in_flight, state.in_flight)
        await asyncio.sleep(0.05)
        state.in_flight -= 1
        if request.url.path.endswith("busy"):
            return JSONResponse({"code": "database_unavailable", "detail": "x"}, 503)
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST"])])
    with BackgroundServer(app) as server:
        state.url = server.base_url
        yield state


async def burst(http: httpx.AsyncClient, url: str, path: str, count: int) -> list[object]:
    client = ControlPlaneClient(url, "service-token", http=http)
    return await asyncio.gather(
        *(client._request("POST", path, json={"n": n}) for n in range(count)),
        return_exceptions=True,
    )


async def test_a_burst_of_requests_keeps_to_the_bound(control_plane: SlowControlPlane) -> None:
    async with BoundedClient(limits=LIMITS, max_in_flight=4) as http:
        answers = await burst(http, control_plane.url, "/api/v1/telemetry/calls", 30)
        assert answers == [{"ok": True}] * 30  # all served, none lost or refused
        assert control_plane.most_in_flight == 4

        errors = await burst(http, control_plane.url, "/busy", 12)  # error answers free slots too
        assert all(isinstance(e, ControlPlaneError) and e.status == 503 for e in errors)
        for _ in range(4):  # every slot is back: four can be taken at once
            await asyncio.wait_for(http.slots.acquire(), 1)
        assert http.slots.locked()


async def test_without_the_bound_the_whole_burst_is_in_flight(
    control_plane: SlowControlPlane,
) -> None:
    """The twin: a plain pooled client sends all 30 at once (httpx's pool allows 100)."""
    async with httpx.AsyncClient(limits=LIMITS) as http:
        answers = await burst(http, control_plane.url, "/api/v1/telemetry/calls", 30)
    assert answers == [{"ok": True}] * 30
    assert control_plane.most_in_flight == 30


async def test_an_environment_proxy_still_applies(
    control_plane: SlowControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")  # nothing listens
    async with BoundedClient(limits=LIMITS, max_in_flight=4) as http:
        (refused,) = await burst(http, control_plane.url, "/x", 1)
    assert isinstance(refused, ControlPlaneError) and refused.code == "control_plane_unreachable"

    monkeypatch.setenv("no_proxy", "127.0.0.1")
    async with BoundedClient(limits=LIMITS, max_in_flight=4) as http:
        assert await burst(http, control_plane.url, "/x", 1) == [{"ok": True}]
