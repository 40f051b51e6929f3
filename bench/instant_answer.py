"""What one hot read costs inside `switchboard serve`'s HTTP protocol (`make bench-instant-answer`).

`GuardedHttpProtocol` is fed whole requests on a uvloop loop, over a transport that only counts
what is written: no socket, no kernel, no client, so what is left is the server's own Python per
request (parsing callbacks, the guards, the hot lane's lookup, metrics, writing the answer).
Two requests, each answered instantly from what the control plane keeps (SQLite, the 1,000-agent
seed of bench/control_plane.py): a conditional `GET /api/v1/tiers` answered 304, and one agent's
session-config with a service token. Reported: µs per request, min and median of ROUNDS rounds of
REQUESTS requests (process CPU time), with the host reference (bench/host.py) beside it;
written to bench/results/instant_answer.json for `make bench-report`.

A live server spends about three times this per request (the socket reads and writes, the loop's
wake-ups): bench/control_plane.py measures that, against unleash-server.
"""

import asyncio
import functools
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from starlette.testclient import TestClient
from uvicorn.server import ServerState

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.control_plane import seed  # noqa: E402
from bench.host import Case, report_rounds, time_rounds  # noqa: E402
from control_plane.app import create_app  # noqa: E402
from switchboard_runtime.worker.serving import (  # noqa: E402
    INSTANT_ANSWERS,
    GuardedHttpProtocol,
    uvicorn_options,
)

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "9"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "20000"))


class CountingTransport(asyncio.Transport):
    """A connected client that reads everything at once: counts the writes, keeps nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        addresses = {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}
        return addresses.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def cost_per_request(app: Any, requests: dict[str, bytes]) -> dict[str, list[float]]:
    """µs of process CPU per request, per round, for each request (rounds interleaved)."""
    config = uvicorn.Config(app, **uvicorn_options("127.0.0.1", 8000))
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", b"Mon, 07 Dec 2026 04:00:00 GMT"), *config.encoded_headers]
    answers = app.hot_lane.answer_now
    protocol = GuardedHttpProtocol(
        config, state, {INSTANT_ANSWERS: answers}, asyncio.get_running_loop()
    )
    transport = CountingTransport()
    protocol.connection_made(transport)
    cases = {
        name: Case(functools.partial(protocol.data_received, request), lambda: transport.writes)
        for name, request in requests.items()
    }
    costs = await time_rounds(cases, REQUESTS, ROUNDS)
    protocol.connection_lost(None)
    return costs


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    seeded = seed(f"sqlite:///{workdir}/bench.db", workdir / "seed")
    app = create_app(seeded.settings)
    service = {"Authorization": f"Bearer {seeded.service_token}"}
    with TestClient(app) as client:  # the routes build what the lane then keeps
        agent = seeded.agent_paths[0]
        if client.get(agent, headers=service).status_code != 200:
            raise SystemExit("the seeded agent's session-config did not answer 200")
        etag = client.get("/api/v1/tiers").headers["etag"]
        requests = {
            "tiers, 304": (
                f"GET /api/v1/tiers HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n"
            ).encode(),
            "session-config": (
                f"GET {agent} HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {seeded.service_token}\r\n\r\n"
            ).encode(),
        }
        costs = uvloop.run(cost_per_request(app, requests))
    report_rounds("instant_answer", "request", costs, REQUESTS)


if __name__ == "__main__":
    main()
