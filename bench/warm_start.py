"""Warm start vs cold start, side by side in one run (`make bench-warm-start`).

Processes: the fake xAI (answers as soon as it hears speech), the control plane (SQLite), and two
call workers: one with warm start, one without. Between the workers and the fake xAI, and
between the workers and the control plane, a delay proxy (bench/netdelay.py) plays a network:
DELAY ms each way on every byte, and 2 round trips of TCP + TLS handshake on a new connection.

For each call, as a phone provider would: a signed `/twiml` webhook, then (after GAP ms, the
provider's time to open the media stream) the stream with its token, `start`, and caller audio
every 20 ms until the agent's first audio arrives. Measured: the phone's `start` to the first
agent audio frame at the phone. Beside it, the fake's own response time through the same proxy
(a client with a ready session: speech sent → first audio back). Warm and cold calls alternate;
LANES calls run at a time.

Environment: BENCH_CALLS (per path and setting, default 50), BENCH_DELAYS_MS (default "0,20,40"),
BENCH_GAP_MS (default 500), BENCH_CP_DELAY_MS (control plane, default = the xAI delay),
BENCH_UTTERANCE_FRAMES (default 1: the fake answers the first frame of speech; N: after N frames,
a caller who speaks N x 20 ms before the model can answer, as a real turn detector waits).
Goal (issue): warm p50 and p95 at most 5 ms over the fake's own response time, at every delay.
"""

import asyncio
import base64
import json
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.netdelay import DelayProxy  # noqa: E402
from bench.phone_calls import quantile  # noqa: E402
from bench.runtime import BARE_SESSION, XAI_KEY, prepare_control_plane, start  # noqa: E402
from switchboard_runtime import protocol  # noqa: E402
from tests.fakes.server import free_port  # noqa: E402

CALLS = int(os.environ.get("BENCH_CALLS", "50"))
DELAYS_MS = [float(d) for d in os.environ.get("BENCH_DELAYS_MS", "0,20,40").split(",")]
GAP_MS = float(os.environ.get("BENCH_GAP_MS", "500"))
CP_DELAY_MS = os.environ.get("BENCH_CP_DELAY_MS")
LANES = int(os.environ.get("BENCH_LANES", "4"))
UTTERANCE_FRAMES = int(os.environ.get("BENCH_UTTERANCE_FRAMES", "1"))
SPEECH = base64.b64encode(bytes([0x7F]) * 160).decode()
GOAL_MS = 5.0


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(samples), "p95": quantile(samples, 0.95), "n": len(samples)}


async def fake_response_ms(realtime_url: str) -> float:
    """The fake's own response time through the proxy: speech sent on a ready session → its
    first audio back."""
    async with connect(
        realtime_url, additional_headers={"Authorization": f"Bearer {XAI_KEY}"}, compression=None
    ) as xai:
        await xai.send(protocol.session_update(BARE_SESSION))
        async for raw in xai:
            if json.loads(raw).get("type") == "session.updated":
                break
        started = time.perf_counter()

        async def speak() -> None:  # the utterance, a frame every 20 ms as the phone sends it
            for index in range(UTTERANCE_FRAMES):
                await xai.send(protocol.append_audio(SPEECH))
                await asyncio.sleep(max(0.0, started + (index + 1) * 0.02 - time.perf_counter()))

        speaking = asyncio.create_task(speak())
        try:
            async with asyncio.timeout(20):
                async for raw in xai:
                    if json.loads(raw).get("type") == "response.output_audio.delta":
                        return (time.perf_counter() - started) * 1000
        finally:
            speaking.cancel()
    raise RuntimeError("the fake never answered")


async def first_audio_ms(
    http: httpx.AsyncClient, worker: str, agent_id: str, twilio_token: str, gap: float, index: int
) -> float:
    """One call as a phone provider places it; the phone's `start` → the first agent audio."""
    from twilio.request_validator import RequestValidator

    url = f"{worker}/twiml/{agent_id}?workspace_id=acme"
    params = {"CallSid": f"CA{index:032d}", "From": "+15550100", "To": "+15550199"}
    signature = RequestValidator(twilio_token).compute_signature(url, params)
    answer = await http.post(url, data=params, headers={"X-Twilio-Signature": signature})
    stream = re.search(r'<Stream url="([^"]+)"', answer.text)
    token = re.search(r'name="stream_token" value="([^"]+)"', answer.text)
    if stream is None or token is None:
        raise RuntimeError(f"call refused: {answer.text[:200]}")
    await asyncio.sleep(gap)
    async with connect(stream.group(1), compression=None) as phone:
        sid = f"MZ{index}"
        await phone.send(json.dumps({"event": "connected", "protocol": "Call"}))
        started = time.perf_counter()
        parameters = {"stream_token": token.group(1)}
        await phone.send(
            json.dumps(
                {
                    "event": "start",
                    "streamSid": sid,
                    "start": {"streamSid": sid, "customParameters": parameters},
                }
            )
        )
        heard = await speak_until_answered(phone, sid)
        elapsed = (heard - started) * 1000
        await phone.send(json.dumps({"event": "stop", "streamSid": sid}))
    return elapsed


async def speak_until_answered(phone: ClientConnection, sid: str) -> float:
    """Caller audio every 20 ms until the first agent audio; when it arrived."""
    frame = json.dumps({"event": "media", "streamSid": sid, "media": {"payload": SPEECH}})

    async def speak() -> None:
        while True:
            await phone.send(frame)
            await asyncio.sleep(0.02)

    speaking = asyncio.create_task(speak())
    try:
        async with asyncio.timeout(20):
            async for raw in phone:
                if json.loads(raw).get("event") == "media":
                    return time.perf_counter()
    finally:
        speaking.cancel()
    raise RuntimeError("the call ended before the agent spoke")


async def one_setting(
    http: httpx.AsyncClient, workers: dict[str, str], agent_id: str, twilio_token: str, gap: float
) -> dict[str, list[float]]:
    """CALLS warm and CALLS cold calls, alternating, LANES at a time."""
    samples: dict[str, list[float]] = {"warm": [], "cold": []}
    lane = asyncio.Semaphore(LANES)
    numbers = iter(range(10**9))

    async def one(path: str) -> float:
        async with lane:
            call = time.time_ns() // 1000 + next(numbers)  # a fresh CallSid
            return await first_audio_ms(http, workers[path], agent_id, twilio_token, gap, call)

    for path in ("warm", "cold"):  # warm-up: pooled connections on both workers
        await one(path)
    jobs = [path for _ in range(CALLS) for path in ("warm", "cold")]
    results = await asyncio.gather(*(one(path) for path in jobs))
    for path, elapsed in zip(jobs, results, strict=True):
        samples[path].append(elapsed)
    return samples


async def measure(
    workers: dict[str, str], agent_id: str, twilio_token: str, proxies: dict[str, DelayProxy]
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    realtime = f"ws://127.0.0.1:{proxies['xai'].port}/v1/realtime?model=grok-voice-latest"
    settings = [(delay, GAP_MS) for delay in DELAYS_MS] + [(max(DELAYS_MS), 0.0)]
    async with httpx.AsyncClient(timeout=30) as http:
        for delay_ms, gap_ms in settings:
            cp_delay = float(CP_DELAY_MS) if CP_DELAY_MS is not None else delay_ms
            proxies["xai"].delay = delay_ms / 1000
            proxies["control_plane"].delay = cp_delay / 1000
            fake = [await fake_response_ms(realtime) for _ in range(CALLS)]
            samples = await one_setting(http, workers, agent_id, twilio_token, gap_ms / 1000)
            key = f"delay_{delay_ms:g}ms_gap_{gap_ms:g}ms"
            results[key] = {
                "xai_delay_ms": delay_ms,
                "control_plane_delay_ms": cp_delay,
                "provider_gap_ms": gap_ms,
                "fake_response_ms": summary(fake),
                "warm_first_audio_ms": summary(samples["warm"]),
                "cold_first_audio_ms": summary(samples["cold"]),
            }
            print(key, json.dumps(results[key]), flush=True)
    return results


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-bench-warm-"))
    fake_port, cp_port = free_port(), free_port()
    twilio_token = secrets.token_hex(16)
    fake = start(
        [
            *(sys.executable, "-m", "tests.fakes.run_fake_xai", str(fake_port), XAI_KEY),
            *("--eager", "--utterance-frames", str(UTTERANCE_FRAMES)),
        ],
        dict(os.environ),
        f"http://127.0.0.1:{fake_port}/v1/api-key",
    )
    processes = [fake]

    async def everything() -> dict[str, Any]:
        proxies = {
            "xai": DelayProxy(fake_port),
            "control_plane": DelayProxy(cp_port, handshake_rtts=0),  # a pooled, private link
        }
        xai_port = await proxies["xai"].start()
        cp_proxy_port = await proxies["control_plane"].start()
        env, token, _reader, agent_id = await asyncio.to_thread(
            prepare_control_plane, f"sqlite:///{workdir}/bench.db", workdir, xai_port
        )
        env["SWITCHBOARD_TWILIO_AUTH_TOKEN"] = twilio_token  # a single-tenant install
        uvicorn = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]
        processes.append(
            await asyncio.to_thread(
                start,
                [*uvicorn, "control_plane.app:create_app", "--factory", "--port", str(cp_port)],
                env,
                f"http://127.0.0.1:{cp_port}/healthz",
            )
        )
        workers = {}
        for path in ("warm", "cold"):
            port = free_port()
            worker_env = {
                **env,
                "SWITCHBOARD_SERVICE_TOKEN": token,
                "SWITCHBOARD_CONTROL_PLANE_URL": f"http://127.0.0.1:{cp_proxy_port}",
                "SWITCHBOARD_WORKER_PUBLIC_URL": f"http://127.0.0.1:{port}",
                "SWITCHBOARD_WARM_START": "true" if path == "warm" else "false",
                "SWITCHBOARD_LOG_LEVEL": "WARNING",
            }
            switchboard = str(Path(sys.executable).parent / "switchboard")
            processes.append(
                await asyncio.to_thread(
                    start,
                    # Two workers: each its own media port (the default, 8002, fits one).
                    [switchboard, "worker", "--port", str(port), "--media-port", "0"],
                    worker_env,
                    f"http://127.0.0.1:{port}/healthz",
                )
            )
            workers[path] = f"http://127.0.0.1:{port}"
        try:
            return await measure(workers, agent_id, twilio_token, proxies)
        finally:
            for proxy in proxies.values():
                await proxy.aclose()

    try:
        results = asyncio.run(everything())
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=15)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "warm_start.json").write_text(json.dumps(results, indent=2))
    print()
    header = ("setting", "fake p50/p95", "warm p50/p95", "cold p50/p95", "warm - fake")
    print(f"{header[0]:28} {header[1]:>13} {header[2]:>13} {header[3]:>13}  {header[4]}")
    failed = False
    for key, row in results.items():
        fake, warm, cold = (
            row["fake_response_ms"],
            row["warm_first_audio_ms"],
            row["cold_first_audio_ms"],
        )
        over = (warm["p50"] - fake["p50"], warm["p95"] - fake["p95"])
        if row["provider_gap_ms"]:
            ok, goal = max(over) <= GOAL_MS, f"warm <= fake + {GOAL_MS:g} ms"
        else:  # the stream comes at once: the session cannot be ready, never worse than cold
            ok, goal = warm["p50"] <= cold["p50"] + 1, "warm never worse than cold"
        failed |= not ok
        print(
            f"{key:28} {fake['p50']:6.1f}/{fake['p95']:6.1f} {warm['p50']:6.1f}/{warm['p95']:6.1f}"
            f" {cold['p50']:6.1f}/{cold['p95']:6.1f}  {over[0]:+6.1f}/{over[1]:+6.1f} ms"
            f"  {'PASS' if ok else 'FAIL'} ({goal})"
        )
    print(f"\n{'FAIL' if failed else 'PASS'}")


if __name__ == "__main__":
    main()
