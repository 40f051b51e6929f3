"""Bounded soak on loopback: a steady request rate against session-config and the Unleash client
API for a few minutes; reports errors and the server's memory growth (`make soak`).

Defaults: 3 minutes at 300 requests/s (two thirds session-config, one third client API), one
uvicorn worker on SQLite. Memory is the server process's RSS after a 20 s warm-up and at the end.
Target (issue): no error responses, memory growth < 10 %.
"""

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.runtime import prepare_control_plane, start  # noqa: E402
from tests.fakes.server import free_port  # noqa: E402

DURATION = float(os.environ.get("SOAK_SECONDS", "180"))
RATE = float(os.environ.get("SOAK_RATE", "300"))
WARMUP = 20.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def load(base: str, token: str, agent_id: str, pid: int) -> dict[str, object]:
    config_url = f"{base}/api/v1/workspaces/acme/agents/{agent_id}/session-config"
    statuses: dict[int, int] = {}
    errors = 0
    started = time.perf_counter()
    rss_after_warmup = None
    interval = 1 / RATE
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=32), timeout=10) as http:
        tasks: set[asyncio.Task[None]] = set()

        async def one(i: int) -> None:
            nonlocal errors
            try:
                if i % 3 == 2:
                    response = await http.get(
                        f"{base}/api/client/features",
                        headers={"Authorization": "soak-client-token"},
                    )
                else:
                    response = await http.get(
                        config_url, headers={"Authorization": f"Bearer {token}"}
                    )
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            except httpx.HTTPError:
                errors += 1

        i = 0
        while (now := time.perf_counter() - started) < DURATION:
            if rss_after_warmup is None and now >= WARMUP:
                rss_after_warmup = rss_kib(pid)
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
            await asyncio.sleep(max(0.0, started + i * interval - time.perf_counter()))
        await asyncio.gather(*tasks)
    rss_end = rss_kib(pid)
    assert rss_after_warmup is not None
    return {
        "seconds": DURATION,
        "rate_per_second": RATE,
        "requests": i,
        "statuses": statuses,
        "transport_errors": errors,
        "rss_after_warmup_kib": rss_after_warmup,
        "rss_end_kib": rss_end,
        "rss_growth_percent": round(100 * (rss_end - rss_after_warmup) / rss_after_warmup, 2),
    }


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-soak-"))
    port = free_port()
    env, token, agent_id = prepare_control_plane(
        f"sqlite:///{workdir}/soak.db", workdir, free_port()
    )
    env["SWITCHBOARD_CLIENT_API_TOKENS"] = "soak-client-token"
    server = start(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "control_plane.app:create_app",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env,
        f"http://127.0.0.1:{port}/healthz",
    )
    try:
        results = asyncio.run(load(f"http://127.0.0.1:{port}", token, agent_id, server.pid))
    finally:
        server.terminate()
        server.wait(timeout=10)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "soak.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    bad = sum(n for status, n in results["statuses"].items() if status != 200)  # type: ignore[attr-defined]
    print(f"\nnon-200 responses: {bad}, transport errors: {results['transport_errors']} (target 0)")
    print(f"RSS growth after warm-up: {results['rss_growth_percent']} % (target < 10 %)")


if __name__ == "__main__":
    main()
