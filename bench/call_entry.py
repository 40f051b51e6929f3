"""What authenticated call entry adds to a call start (`make bench-call-entry`).

1. The checks themselves, in process: Twilio's HMAC-SHA1 webhook signature, Telnyx's Ed25519
   webhook signature, signing and verifying a stream token (µs, p50/p99 over many runs).
2. The round trips, against a running Switchboard (SQLite, one uvicorn worker) over loopback:
   issuing a call (signature check, the session-config refusals, the call cap, a write) and
   claiming its stream token (a conditional write), beside a cached session-config GET in the
   same run (ms, p50/p99).
"""

import base64
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.phone_calls import quantile  # noqa: E402
from bench.runtime import prepare_control_plane, start  # noqa: E402
from control_plane.calls import tokens, webhooks  # noqa: E402
from tests.fakes.server import free_port  # noqa: E402

RUNS = 20_000
ROUND_TRIPS = 500


def quantiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": statistics.median(ordered),
        "p99": quantile(ordered, 0.99),
    }


def time_us(work: Callable[[], object], runs: int = RUNS) -> dict[str, float]:
    for _ in range(200):
        work()
    samples = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        work()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return quantiles(samples)


def checks() -> dict[str, dict[str, float]]:
    auth_token = secrets.token_hex(16)
    url = "https://worker.example.com/twiml/agt_0123456789abcdef?workspace_id=acme"
    params = {
        "AccountSid": "AC" + "0" * 32,
        "ApiVersion": "2010-04-01",
        "CallSid": "CA" + "1" * 32,
        "CallStatus": "ringing",
        "Called": "+15550199",
        "Caller": "+15550100",
        "Direction": "inbound",
        "From": "+15550100",
        "To": "+15550199",
    }
    signature = webhooks.twilio_signature(auth_token, url, params)
    key = Ed25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    body = b"CallSid=v3%3Aabc&From=%2B15550100&To=%2B15550199&CallStatus=ringing"
    now = int(time.time())
    telnyx_signature = base64.b64encode(key.sign(f"{now}|".encode() + body)).decode()
    stream_key = b"k" * 32
    grant = tokens.StreamGrant(
        "call_0123456789abcdef", "acme", "agt_0123456789abcdef", datetime.now(UTC) + timedelta(60)
    )
    token = tokens.sign(stream_key, grant)
    moment = datetime.now(UTC)
    return {
        "twilio_signature_us": time_us(
            lambda: webhooks.verify_twilio(auth_token, url, params, signature)
        ),
        "telnyx_signature_us": time_us(
            lambda: webhooks.verify_telnyx(
                public.decode(), body, str(now), telnyx_signature, now + 1
            )
        ),
        "stream_token_sign_us": time_us(lambda: tokens.sign(stream_key, grant)),
        "stream_token_verify_us": time_us(lambda: tokens.verify(stream_key, token, moment)),
    }


def round_trips(base: str, service_token: str, agent_id: str) -> dict[str, dict[str, float]]:
    headers = {"Authorization": f"Bearer {service_token}"}
    issue_ms, claim_ms, config_ms = [], [], []
    with httpx.Client(base_url=base, headers=headers) as http:
        path = f"/api/v1/workspaces/acme/agents/{agent_id}"
        for index in range(ROUND_TRIPS + 50):
            started = time.perf_counter()
            issued = http.post(f"{path}/calls", json={"channel": "api"})
            issued_at = time.perf_counter()
            assert issued.status_code == 201, issued.text
            claimed = http.post(
                "/api/v1/calls/claim",
                json={"stream_token": issued.json()["stream_token"], "agent_id": agent_id},
            )
            claimed_at = time.perf_counter()
            assert claimed.status_code == 200, claimed.text
            config = http.get(f"{path}/session-config")
            done = time.perf_counter()
            assert config.status_code == 200, config.text
            if index >= 50:  # warm-up: caches, connections
                issue_ms.append((issued_at - started) * 1000)
                claim_ms.append((claimed_at - issued_at) * 1000)
                config_ms.append((done - claimed_at) * 1000)
    return {
        "issue_call_ms": quantiles(issue_ms),
        "claim_call_ms": quantiles(claim_ms),
        "session_config_cached_ms": quantiles(config_ms),
    }


def main() -> None:
    results: dict[str, Any] = {"checks": checks()}
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    env, token, _reader, agent_id = prepare_control_plane(
        f"sqlite:///{workdir}/bench.db", workdir, 1
    )
    port = free_port()
    server = start(
        [
            *(sys.executable, "-m", "uvicorn", "control_plane.app:create_app", "--factory"),
            *("--port", str(port), "--log-level", "warning", "--no-access-log"),
        ],
        env,
        f"http://127.0.0.1:{port}/healthz",
    )
    try:
        results["round_trips"] = round_trips(f"http://127.0.0.1:{port}", token, agent_id)
    finally:
        server.terminate()
        server.wait(timeout=10)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "call_entry.json").write_text(json.dumps(results, indent=2))
    for name, figure in {**results["checks"], **results["round_trips"]}.items():
        print(f"{name:28} p50 {figure['p50']:8.2f}   p99 {figure['p99']:8.2f}")


if __name__ == "__main__":
    main()
