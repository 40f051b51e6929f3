"""Bounded soak on loopback: a steady mix of reads and writes for a few minutes (`make soak`).

Reads (85 %): session-config over 1,000 agents in 50 workspaces, a random one each time, the
Unleash client API and the tier catalogue. Writes (15 %), each of which invalidates cached
configs: agent edits, agents created and deleted, xAI key rotations. The server's RSS is sampled
every 5 s.

Defaults: 180 s at 300 requests/s, one uvicorn worker on SQLite (SOAK_SECONDS, SOAK_RATE,
SOAK_DATABASE_URL for PostgreSQL). Fails (exit 1) on any unexpected status or transport error,
or when RSS after the 20 s warm-up grows by more than 10 % (MAX_GROWTH_PERCENT) at any sample.
"""

import asyncio
import json
import os
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.control_plane import CLIENT_TOKEN, Seeded, seed, switchboard_server  # noqa: E402
from bench.runtime import rss_kib  # noqa: E402
from control_plane.auth import service as auth_service  # noqa: E402
from control_plane.db import make_engine  # noqa: E402

DURATION = float(os.environ.get("SOAK_SECONDS", "180"))
RATE = float(os.environ.get("SOAK_RATE", "300"))
WARMUP = 20.0
SAMPLE_EVERY = 5.0
MAX_GROWTH_PERCENT = 10.0


def server_pid(port: int) -> int:
    """The uvicorn process listening on the port (the benchmark's server)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                command = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"uvicorn" in b" ".join(command) and str(port).encode() in command:
                return int(proc.name)
    raise RuntimeError("server process not found")


class Mix:
    """One request of the mix at a time, chosen by weight; returns (kind, expected, response)."""

    def __init__(self, seeded: Seeded, admin_token: str) -> None:
        self.paths = seeded.agent_paths
        self.service = {"Authorization": f"Bearer {seeded.service_token}"}
        self.admin = {"Authorization": f"Bearer {admin_token}"}
        self.created: list[str] = []
        self.rng = random.Random(20261125)
        self.kinds = [
            ("session_config", 60),
            ("client_features", 15),
            ("tiers", 10),
            ("edit_agent", 8),
            ("create_agent", 3),
            ("delete_agent", 3),
            ("rotate_key", 1),
        ]

    def pick(self) -> str:
        return self.rng.choices([k for k, _ in self.kinds], [w for _, w in self.kinds])[0]

    async def send(self, http: httpx.AsyncClient, kind: str) -> tuple[int, httpx.Response]:
        path = self.rng.choice(self.paths)
        workspace = path.split("/")[4]
        if kind == "session_config":
            return 200, await http.get(path, headers=self.service)
        if kind == "client_features":
            return 200, await http.get(
                "/api/client/features", headers={"Authorization": CLIENT_TOKEN}
            )
        if kind == "tiers":
            return 200, await http.get("/api/v1/tiers")
        if kind == "edit_agent":
            agent = path.rsplit("/", 1)[0]
            body = {"instructions": f"You are Ava. Revision {secrets.token_hex(4)}."}
            return 200, await http.patch(agent, json=body, headers=self.admin)
        if kind == "create_agent":
            response = await http.post(
                f"/api/v1/workspaces/{workspace}/agents",
                json={"name": "Churn", "pricing_tier": "grok-realtime", "voice": "marin"},
                headers=self.admin,
            )
            if response.status_code == 201:
                self.created.append(
                    f"/api/v1/workspaces/{workspace}/agents/{response.json()['id']}"
                )
            return 201, response
        if kind == "delete_agent":
            if not self.created:
                return await self.send(http, "create_agent")
            return 204, await http.delete(self.created.pop(0), headers=self.admin)
        body = {"xai_api_key": "xai-" + secrets.token_hex(20)}
        return 200, await http.put(
            f"/api/v1/workspaces/{workspace}/settings/api-keys", json=body, headers=self.admin
        )


async def load(base: str, mix: Mix, pid: int) -> dict[str, Any]:
    counts: dict[str, int] = {}
    unexpected: list[str] = []
    transport_errors = 0
    samples: list[tuple[float, int]] = []
    started = time.perf_counter()
    interval = 1 / RATE
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as http:
        tasks: set[asyncio.Task[None]] = set()

        async def one(kind: str) -> None:
            nonlocal transport_errors
            try:
                expected, response = await mix.send(http, kind)
            except httpx.HTTPError:
                transport_errors += 1
                return
            counts[kind] = counts.get(kind, 0) + 1
            if response.status_code != expected:
                unexpected.append(f"{kind}: {response.status_code} {response.text[:200]}")

        i = 0
        next_sample = 0.0
        while (now := time.perf_counter() - started) < DURATION:
            if now >= next_sample:
                samples.append((round(now, 1), rss_kib(pid)))
                next_sample += SAMPLE_EVERY
            task = asyncio.create_task(one(mix.pick()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
            await asyncio.sleep(max(0.0, started + i * interval - time.perf_counter()))
        await asyncio.gather(*tasks)
    samples.append((round(time.perf_counter() - started, 1), rss_kib(pid)))
    baseline = next(rss for at, rss in samples if at >= WARMUP)
    peak = max(rss for at, rss in samples if at >= WARMUP)
    return {
        "seconds": DURATION,
        "rate_per_second": RATE,
        "requests": i,
        "counts": counts,
        "unexpected": unexpected,
        "transport_errors": transport_errors,
        "rss_samples_kib": samples,
        "rss_after_warmup_kib": baseline,
        "rss_peak_after_warmup_kib": peak,
        "rss_growth_percent": round(100 * (peak - baseline) / baseline, 2),
    }


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-soak-"))
    database_url = os.environ.get("SOAK_DATABASE_URL", f"sqlite:///{workdir}/soak.db")
    seeded = seed(database_url, workdir)
    engine = make_engine(seeded.settings)
    with Session(engine) as session:
        _, admin_token = auth_service.create_token(session, name="soak-admin", scopes=["admin"])
        session.commit()
    engine.dispose()
    with switchboard_server(seeded, workdir) as base:
        pid = server_pid(int(base.rsplit(":", 1)[1]))
        results = asyncio.run(load(base, Mix(seeded, admin_token), pid))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "soak.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "rss_samples_kib"}, indent=2))
    print("RSS (s, KiB):", " ".join(f"{at}:{rss}" for at, rss in results["rss_samples_kib"]))
    failures = []
    if results["unexpected"] or results["transport_errors"]:
        failures.append(
            f"{len(results['unexpected'])} unexpected answers, "
            f"{results['transport_errors']} transport errors: {results['unexpected'][:3]}"
        )
    if results["rss_growth_percent"] > MAX_GROWTH_PERCENT:
        failures.append(
            f"RSS grew {results['rss_growth_percent']} % after warm-up "
            f"(bound {MAX_GROWTH_PERCENT} %)"
        )
    print("\n" + ("FAIL: " + "; ".join(failures) if failures else "PASS: no errors, RSS bounded"))
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
