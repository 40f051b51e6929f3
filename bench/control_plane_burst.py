"""A burst of control-plane requests from one worker, bounded vs unbounded, side by side in one
run (`make bench-control-plane-burst`).

When many calls start or end together the worker sends the control plane hundreds of requests at
once (issue, claim, report). httpx's pool rescans its queue and connections whenever one finishes,
so an unbounded burst costs CPU quadratic in its size, spent on the event loop every call's audio
waits for. BURST requests (default 400) go to a local server that answers each after 50 ms,
through the worker's client (at most 16 in flight, its default) and through a plain pooled
client; CPU is the client thread's own (the server runs on another thread). Three rounds each,
alternating.
"""

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from switchboard_runtime.client import BoundedClient, ControlPlaneClient  # noqa: E402
from tests.fakes.server import BackgroundServer  # noqa: E402

BURST = int(os.environ.get("BURST", "400"))
LIMITS = httpx.Limits(keepalive_expiry=4.0)


async def answer(request: Request) -> JSONResponse:
    await request.body()
    await asyncio.sleep(0.05)
    return JSONResponse({"accepted": True})


async def one_burst(url: str, bounded: bool) -> tuple[float, float]:
    """(client CPU seconds, wall seconds) for BURST concurrent reports."""
    http = (
        BoundedClient(limits=LIMITS, max_in_flight=16)
        if bounded
        else httpx.AsyncClient(limits=LIMITS)
    )
    async with http:
        client = ControlPlaneClient(url, "service-token", http=http)
        await asyncio.gather(*(client._request("POST", "/warm-up") for _ in range(16)))
        cpu, wall = time.thread_time(), time.perf_counter()
        await asyncio.gather(
            *(
                client._request("POST", "/api/v1/telemetry/calls", json={"n": n})
                for n in range(BURST)
            )
        )
        return time.thread_time() - cpu, time.perf_counter() - wall


def main() -> None:
    app = Starlette(routes=[Route("/{path:path}", answer, methods=["POST"])])
    results: dict[str, list[tuple[float, float]]] = {"bounded": [], "unbounded": []}
    with BackgroundServer(app) as server:
        for _ in range(3):
            for name in ("unbounded", "bounded"):
                results[name].append(uvloop.run(one_burst(server.base_url, name == "bounded")))
    print(f"{BURST} concurrent requests, 50 ms each at the server; median of 3 rounds")
    medians = {}
    for name, rounds in results.items():
        cpu = statistics.median(r[0] for r in rounds) * 1000 / BURST
        wall = statistics.median(r[1] for r in rounds)
        medians[name] = cpu
        print(f"{name:10} client CPU {cpu:6.2f} ms per request, burst done in {wall:5.2f} s")
    print(f"unbounded / bounded CPU per request: {medians['unbounded'] / medians['bounded']:.1f}x")


if __name__ == "__main__":
    main()
