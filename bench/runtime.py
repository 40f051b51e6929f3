"""GrokRealtimeSession against the fake xAI on loopback, in one run (`make bench-runtime`).

  1. time to ready (config pull from a running Switchboard + WebSocket + session.update →
     session.updated) minus the fake's own handshake (a bare client doing the same exchange);
  2. forwarding cost per 20 ms frame: a Twilio media frame read, checked and sent on to xAI;
  3. 200 concurrent bridged calls in this one process, each sending a frame every 20 ms while
     receiving the agent's audio: frame lag = when a frame left minus when it was due.
Targets (issue): 1. ≤ 15 ms; 2. ≤ 50 µs; 3. p99 ≤ 20 ms.
"""

import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from control_plane.runtime import protocol  # noqa: E402
from control_plane.runtime.session import AudioOut, GrokRealtimeSession, MemoryTelemetrySink  # noqa: E402
from control_plane.runtime.telephony import DIALECTS, Media  # noqa: E402
from tests.fakes.server import free_port  # noqa: E402

XAI_KEY = "xai-" + "BenchRuntimeKey0123456789" + "abcd"
FRAME = base64.b64encode(bytes([0x7F]) * 160).decode()
CALLS = int(os.environ.get("BENCH_CALLS", "200"))
SECONDS = 10


def start(args: list[str], env: dict[str, str], health: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(args, env=env, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(health, timeout=1).status_code < 500:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{args[:4]} did not start")


def prepare_control_plane(
    database_url: str, workdir: Path, fake_port: int
) -> tuple[dict[str, str], str, str]:
    from sqlmodel import Session

    from control_plane.auth import service as auth_service
    from control_plane.auth.principal import SYSTEM
    from control_plane.catalogue.seed import seed_catalogue
    from control_plane.db import make_engine
    from control_plane.keys import service as keys_service
    from control_plane.keys.crypto import Keyring
    from control_plane.migrate import upgrade
    from control_plane.rollout import service as rollout
    from control_plane.rollout.models import CohortWrite
    from control_plane.settings import Settings
    from control_plane.workspaces import service as workspaces
    from control_plane.workspaces.models import AgentCreate, WorkspaceCreate, WorkspaceSettingsPatch

    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_ENVIRONMENT": "test",
        "SWITCHBOARD_MASTER_KEY_FILE": str(workdir / "master.key"),
        "SWITCHBOARD_XAI_REALTIME_URL": f"ws://127.0.0.1:{fake_port}/v1/realtime",
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
    }
    settings = Settings(
        _env_file=None,
        environment="test",
        database_url=database_url,
        master_key_file=workdir / "master.key",
    )  # type: ignore[call-arg]
    upgrade(database_url)
    engine = make_engine(settings)
    with Session(engine) as session:
        seed_catalogue(session)
        rollout.seed_flags(session)
        workspaces.create_workspace(session, SYSTEM, WorkspaceCreate(id="acme", name="Acme"))
        rollout.put_cohort(session, None, "internal", CohortWrite(members=["acme"]), actor="bench")
        # Every session here is an issued call; the memory sink never ends them on the control
        # plane, so the workspace needs room for all of them.
        workspaces.update_settings(
            session, SYSTEM, "acme", WorkspaceSettingsPatch(max_concurrent_calls=10_000)
        )
        keys_service.apply_changes(
            session,
            Keyring.from_settings(settings),
            SYSTEM,
            "acme",
            keys_service.plan_changes(session, {"xai_api_key": XAI_KEY}),
        )
        agent = workspaces.create_agent(
            session,
            SYSTEM,
            "acme",
            AgentCreate(name="Ava", pricing_tier="grok-realtime", voice="marin"),
        )
        _, token = auth_service.create_token(session, name="bench", scopes=["service"])
        session.commit()
        agent_id = agent.id
    engine.dispose()
    return env, token, agent_id


async def bare_handshake(url: str) -> float:
    started = time.perf_counter()
    async with connect(url, additional_headers={"Authorization": f"Bearer {XAI_KEY}"}) as ws:
        await ws.send(
            protocol.session_update(
                {
                    "instructions": "x",
                    "voice": "Ara",
                    "turn_detection": {"type": "server_vad"},
                    "audio": {
                        "input": {"format": {"type": "audio/pcmu"}},
                        "output": {"format": {"type": "audio/pcmu"}},
                    },
                    "tools": [],
                }
            )
        )
        async for raw in ws:
            if json.loads(raw).get("type") == "session.updated":
                break
    return time.perf_counter() - started


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def measure(control_plane: str, token: str, agent_id: str, fake_port: int) -> dict[str, Any]:
    realtime = f"ws://127.0.0.1:{fake_port}/v1/realtime?model=grok-voice-latest"
    sink = MemoryTelemetrySink()
    # One pooled client, as the call worker has: a call start must not build its own.
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=50))

    def session() -> GrokRealtimeSession:
        return GrokRealtimeSession(
            control_plane_url=control_plane,
            service_token=token,
            workspace_id="acme",
            agent_id=agent_id,
            telemetry=sink,
            http=http,
        )

    # 1. time to ready vs the bare handshake, interleaved so both see the same machine.
    ready, bare = [], []
    for _ in range(5):  # warm-up: caches, connections
        async with session():
            pass
    for _ in range(50):
        started = time.perf_counter()
        async with session():
            ready.append(time.perf_counter() - started)
        bare.append(await bare_handshake(realtime))
    overhead_ms = (statistics.median(ready) - statistics.median(bare)) * 1000

    # 2. forwarding cost per frame: parse a Twilio media frame and send it on.
    twilio = DIALECTS["twilio"]
    frame_text = json.dumps(
        {
            "event": "media",
            "streamSid": "MZ1",
            "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": FRAME},
        }
    )
    async with session() as call:
        frames = 20_000
        started = time.perf_counter()
        for _ in range(frames):
            event = twilio.parse(json.loads(frame_text))
            assert isinstance(event, Media)
            await call.send_audio(event.payload)
        forwarding_us = (time.perf_counter() - started) / frames * 1e6
        outbound = twilio.media("MZ1", FRAME)
        started = time.perf_counter()
        for _ in range(frames):
            json.dumps(outbound)
        reply_us = (time.perf_counter() - started) / frames * 1e6

    # 3. 200 concurrent calls, each sending a frame every 20 ms for SECONDS. All calls connect
    # first (a burst of 200 handshakes is a different measurement), then talk at once.
    lags: list[float] = []
    received = [0]
    all_connected = asyncio.Barrier(CALLS)

    async def one_call(index: int) -> None:
        # Calls arrive at 100 per second, not all in the same millisecond: each start is an
        # issued call (two writes on the control plane's SQLite).
        await asyncio.sleep(index * 0.01)
        async with session() as call:

            async def drain() -> None:
                async for event in call.events():
                    if isinstance(event, AudioOut):
                        received[0] += 1
                        json.dumps(twilio.media("MZ1", event.payload))  # what the bridge does

            reader = asyncio.create_task(drain())
            await all_connected.wait()
            await asyncio.sleep(index * 0.02 / CALLS)  # calls are not phase-locked in real life
            due = time.perf_counter()
            for _ in range(SECONDS * 50):
                due += 0.02
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                event = twilio.parse(json.loads(frame_text))
                await call.send_audio(event.payload)  # type: ignore[union-attr]
                lags.append(time.perf_counter() - due)
            reader.cancel()

    connected_at = time.perf_counter()
    await asyncio.gather(*(one_call(i) for i in range(CALLS)))
    wall = time.perf_counter() - connected_at
    await http.aclose()
    return {
        "ready_median_ms": statistics.median(ready) * 1000,
        "bare_handshake_median_ms": statistics.median(bare) * 1000,
        "ready_overhead_ms": overhead_ms,
        "forwarding_us_per_frame": forwarding_us,
        "reply_frame_us": reply_us,
        "concurrent_calls": CALLS,
        "frames_sent": len(lags),
        "agent_frames_received": received[0],
        "frame_lag_p50_ms": quantile(lags, 0.5) * 1000,
        "frame_lag_p99_ms": quantile(lags, 0.99) * 1000,
        "frame_lag_max_ms": max(lags) * 1000,
        "wall_seconds": wall,
        "calls_reported": len(sink.reports),
    }


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-bench-runtime-"))
    fake_port, cp_port = free_port(), free_port()
    fake = start(
        [sys.executable, "-m", "tests.fakes.run_fake_xai", str(fake_port), XAI_KEY],
        dict(os.environ),
        f"http://127.0.0.1:{fake_port}/v1/api-key",
    )
    env, token, agent_id = prepare_control_plane(
        f"sqlite:///{workdir}/bench.db", workdir, fake_port
    )
    control_plane = start(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "control_plane.app:create_app",
            "--factory",
            "--port",
            str(cp_port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env,
        f"http://127.0.0.1:{cp_port}/healthz",
    )
    try:
        # uvloop, as under `switchboard worker` (uvicorn picks it when installed).
        import uvloop

        results = uvloop.run(measure(f"http://127.0.0.1:{cp_port}", token, agent_id, fake_port))
    finally:
        control_plane.terminate()
        fake.terminate()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "runtime.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"\nready minus fake handshake: {results['ready_overhead_ms']:.1f} ms (target <= 15)")
    print(f"forwarding per 20 ms frame: {results['forwarding_us_per_frame']:.1f} us (target <= 50)")
    print(f"{CALLS} calls, frame lag p99: {results['frame_lag_p99_ms']:.1f} ms (target <= 20)")


if __name__ == "__main__":
    main()
