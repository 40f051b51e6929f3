"""Memory under a flood of wrong sign-ins (`make bench-sign-in`).

100 concurrent sign-ins with wrong passwords, each for a different account (so the per-account
lock does not stop them before the password is hashed) and with the per-address allowance
raised out of the way: every one reaches argon2 (64 MiB per hash). Measured side by side in one
run against two `switchboard serve` processes on SQLite: hashing bounded to the default 2 at a
time, and to 64, the most the setting allows (in effect unbounded on two cores). Reports the
server's peak RSS (sampled every 20 ms) and the latency of a /healthz request sent in the middle
of the flood.
"""

import asyncio
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.runtime import rss_kib, start  # noqa: E402
from tests.fakes.server import free_port  # noqa: E402

SIGN_INS = 100


async def flood(base: str, pid: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        page = (await http.get("/login")).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        cookies = dict(http.cookies)
        peak = baseline = rss_kib(pid)
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_kib(pid))
                await asyncio.sleep(0.02)

        async def wrong(index: int) -> int:
            form = {"email": f"nobody{index}@example.com", "password": "wrong", "csrf": csrf[1]}
            response = await http.post("/login", data=form, cookies=cookies)
            return response.status_code

        async def health() -> float:
            await asyncio.sleep(0.5)
            started = time.perf_counter()
            await http.get("/healthz")
            return (time.perf_counter() - started) * 1000

        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        statuses, health_ms = await asyncio.gather(
            asyncio.gather(*(wrong(i) for i in range(SIGN_INS))), health()
        )
        seconds = time.perf_counter() - started
        done.set()
        await sampler
    return {
        "statuses": sorted(set(statuses)),
        "rss_before_kib": baseline,
        "rss_peak_kib": peak,
        "healthz_during_flood_ms": round(health_ms, 1),
        "flood_seconds": round(seconds, 2),
    }


def run(bound: int, workdir: Path) -> dict[str, Any]:
    database = workdir / f"sign-in-{bound}.db"
    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": f"sqlite:///{database}",
        "SWITCHBOARD_ENVIRONMENT": "test",
        "SWITCHBOARD_MASTER_KEY_FILE": str(workdir / "master.key"),
        "SWITCHBOARD_MAX_CONCURRENT_PASSWORD_HASHES": str(bound),
        "SWITCHBOARD_SIGN_IN_FREE_ATTEMPTS_PER_ADDRESS": "100000",
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
    }
    switchboard = str(Path(sys.executable).with_name("switchboard"))
    import subprocess

    migrated = subprocess.run([switchboard, "migrate"], env=env, capture_output=True, text=True)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    port = free_port()
    server = start(
        [switchboard, "serve", "--port", str(port)], env, f"http://127.0.0.1:{port}/healthz"
    )
    try:
        pid = server.pid
        children = Path(f"/proc/{pid}/task")
        assert children.exists()
        return asyncio.run(flood(f"http://127.0.0.1:{port}", pid))
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-sign-in-"))
    results = {"bounded_2": run(2, workdir), "bounded_64": run(64, workdir)}
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "sign_in.json").write_text(json.dumps(results, indent=2))
    print(f"{'hash bound':<12}{'RSS before':>12}{'RSS peak':>12}{'healthz ms':>12}{'seconds':>9}")
    for name, r in results.items():
        print(
            f"{name:<12}{r['rss_before_kib'] // 1024:>10} M{r['rss_peak_kib'] // 1024:>10} M"
            f"{r['healthz_during_flood_ms']:>12}{r['flood_seconds']:>9}"
        )
    ratio = results["bounded_64"]["rss_peak_kib"] / results["bounded_2"]["rss_peak_kib"]
    print(f"peak RSS, unbounded / bounded: {ratio:.1f}x")


if __name__ == "__main__":
    main()
