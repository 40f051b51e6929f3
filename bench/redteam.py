"""The hostile-client matrix, re-runnable (`make redteam`): what an anonymous or replaying
client tried against a running control plane and call worker, what should happen, what did.

Processes, all on loopback: the fake xAI, `switchboard serve` (SQLite) and two `switchboard
worker`s (one with SWITCHBOARD_WORKER_MAX_CALLS=4), body deadlines shortened to 3 s so the run
stays short, and for the two memory scenarios a third worker with the size guards switched off,
so the memory an attack costs is shown beside what it costs with them. Every loop is bounded in
count and time; the whole run takes about a minute.
"""

import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import select
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.runtime import XAI_KEY, prepare_control_plane, start  # noqa: E402
from tests.fakes.server import free_port  # noqa: E402

MIB = 1024 * 1024
ADMIN_EMAIL, ADMIN_PASSWORD = "ops@example.com", "the right password 42"
Row = tuple[str, str, str, str]  # scenario, tried, expected, observed
WARM_STARTED = 'switchboard_worker_warm_sessions_total{outcome="started"}'


def unguarded_worker() -> Any:
    """The call worker with its size guards switched off (bodies as uvicorn and Starlette take
    them, frames up to 16 MiB): served by this script beside the real one, for the memory
    figures."""
    from switchboard_runtime.worker import create_worker_app, media_plane

    media_plane.MAX_FRAME_BYTES = 16 * MIB
    app = create_worker_app()
    app.state.media_plane.limits = media_plane.FrameLimits(16 * MIB, 16 * MIB)
    for middleware in app.user_middleware:
        if getattr(middleware.cls, "__name__", "") == "BoundedBody":
            middleware.kwargs["max_bytes"] = 1 << 40
            middleware.kwargs["timeout_seconds"] = 1000.0
    return app


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def metric(worker: str, series: str) -> float:
    """One series of the worker's /metrics, labels included (`name{label="value"}`)."""
    for line in httpx.get(f"{worker}/metrics").text.splitlines():
        if line.rsplit(" ", 1)[0] == series:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class Target:
    def __init__(self, env: dict[str, str], service: str, admin: str, agent: str) -> None:
        self.env, self.service, self.admin, self.agent = env, service, admin, agent
        self.twilio_token = env["SWITCHBOARD_TWILIO_AUTH_TOKEN"]
        self.telnyx_key: Ed25519PrivateKey = Ed25519PrivateKey.generate()
        self.control_plane = ""
        self.workers: dict[str, tuple[str, int]] = {}  # name → (base URL, pid)
        self.media: dict[str, str] = {}  # a worker's base URL → its media plane's ws://
        self.logs: dict[str, Path] = {}  # "control_plane" / a worker's name → its output

    def twiml(self, worker: str, params: dict[str, str], agent: str | None = None) -> str:
        url = f"{worker}/twiml/{agent or self.agent}?workspace_id=acme"
        signature = RequestValidator(self.twilio_token).compute_signature(url, params)
        answer = httpx.post(url, data=params, headers={"X-Twilio-Signature": signature})
        return answer.text

    def texml(self, worker: str, body: bytes, sent_at: int, agent: str | None = None) -> str:
        signed = self.telnyx_key.sign(str(sent_at).encode() + b"|" + body)
        answer = httpx.post(
            f"{worker}/texml/{agent or self.agent}?workspace_id=acme",
            content=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "telnyx-timestamp": str(sent_at),
                "telnyx-signature-ed25519": base64.b64encode(signed).decode(),
            },
        )
        return answer.text

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.admin}"}
        return httpx.request(method, f"{self.control_plane}{path}", headers=headers, **kw)


def stream_token(twiml: str) -> str | None:
    match = re.search(r'name="stream_token" value="([^"]+)"', twiml)
    return match.group(1) if match else None


def call_id_of(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["c"])


def twilio_params() -> dict[str, str]:
    return {"CallSid": f"CA{secrets.token_hex(16)}", "From": "+15550100", "To": "+15550199"}


async def phone(media: str, agent: str, token: str, seconds: float = 2.0) -> tuple[int, Any]:
    """A Twilio media stream with this token on a worker's media plane: start, a second of
    caller audio, hang up. The agent frames it heard and how it was closed (None: it hung up
    itself)."""
    heard = 0
    url = f"{media}/ws/twilio/{agent}"
    async with connect(url) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(
            json.dumps(
                {
                    "event": "start",
                    "streamSid": "MZ1",
                    "start": {
                        "streamSid": "MZ1",
                        "callSid": "CA1",
                        "customParameters": {"stream_token": token},
                        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
                    },
                }
            )
        )
        audio = base64.b64encode(b"\x7f" * 160).decode()
        deadline = time.monotonic() + seconds
        try:
            for _ in range(50):
                await ws.send(json.dumps({"event": "media", "media": {"payload": audio}}))
                await asyncio.sleep(0.02)
            while time.monotonic() < deadline:
                async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                    frame = json.loads(await ws.recv())
                heard += frame.get("event") == "media"
        except ConnectionClosed as closed:
            return heard, closed.rcvd.code if closed.rcvd else None
        except TimeoutError:
            pass
        await ws.send(json.dumps({"event": "stop", "streamSid": "MZ1"}))
    return heard, None


# --- the scenarios ---------------------------------------------------------------------------


def huge_body(target: Target) -> list[Row]:
    rows = []
    for name in ("guarded", "unguarded"):
        worker, pid = target.workers[name]
        port = int(worker.rsplit(":", 1)[1])
        before = rss_mib(pid)
        sent, answer = 0, b""
        head = (
            f"POST /twiml/{target.agent}?workspace_id=acme HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {512 * MIB}"
            "\r\n\r\n"
        ).encode()
        chunk, deadline = b"a" * MIB, time.monotonic() + 30
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.settimeout(10)
            sock.sendall(head)
            while sent < 512 * MIB and time.monotonic() < deadline:
                if select.select([sock], [], [], 0)[0]:  # answered (or closed): stop sending
                    break
                try:
                    sock.sendall(chunk)
                except OSError:
                    break
                sent += len(chunk)
            try:
                answer = sock.recv(200)
            except OSError:
                answer = b""
        peak = rss_mib(pid)
        status = answer.split(b"\r\n", 1)[0].decode() or "closed"
        rows.append(
            (
                f"512 MiB POST /twiml ({name})",
                "Content-Length 512 MiB, body streamed",
                "403 before the body is read; RSS flat" if name == "guarded" else "(the twin)",
                f"{status}; {sent / MIB:.0f} MiB taken; RSS {before:.0f} -> {peak:.0f} MiB",
            )
        )
    return rows


async def huge_frames(target: Target) -> list[Row]:
    rows = []
    for name in ("guarded", "unguarded"):
        worker, pid = target.workers[name]
        before = rss_mib(pid)
        url = target.media[worker] + "/ws/twilio/agt_anonymous"
        sockets, codes = [], []
        for _ in range(10):
            ws = await connect(url, max_size=None)
            sockets.append(ws)
            with contextlib.suppress(ConnectionClosed):
                await ws.send("x" * (15 * MIB))
        await asyncio.sleep(1)
        peak = rss_mib(pid)
        for ws in sockets:
            try:
                async with asyncio.timeout(0.2):
                    await ws.recv()
            except ConnectionClosed as ended:
                codes.append(ended.rcvd.code if ended.rcvd else 0)
            except TimeoutError:
                codes.append(-1)  # still open
            await ws.close()
        closed = codes.count(1009)
        rows.append(
            (
                f"10 x 15 MiB frames before start ({name})",
                "10 anonymous media streams, one 15 MiB text frame each",
                "each closed 1009 unread; RSS flat" if name == "guarded" else "(the twin)",
                f"{closed}/10 closed 1009; RSS {before:.0f} -> {peak:.0f} MiB",
            )
        )
    return rows


async def anonymous_sockets(target: Target) -> list[Row]:
    worker, _ = target.workers["capped"]
    url = target.media[worker] + f"/ws/realtime/{target.agent}"
    held = [await connect(url) for _ in range(4)]
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient() as http:
        ready = (await http.get(f"{worker}/readyz")).status_code
    answered = 0
    for _ in range(12):
        twiml = await asyncio.to_thread(target.twiml, worker, twilio_params())
        token = stream_token(twiml)
        if token:
            answered += 1
            await phone(target.media[worker], target.agent, token, seconds=0.1)
    for ws in held:
        await ws.close()
    return [
        (
            "anonymous browser sockets vs max calls 4",
            "4 /ws/realtime sockets showing no token, then 12 signed calls",
            "/readyz 200; 12 of 12 answered",
            f"/readyz {ready}; {answered} of 12 answered",
        )
    ]


def slow_bodies(target: Target) -> list[Row]:
    cases = {
        "control plane /login (form)": (target.control_plane, "/login", "x-www-form-urlencoded"),
        "control plane /api/v1/calls/claim (text)": (
            target.control_plane,
            "/api/v1/calls/claim",
            "plain",
        ),
        "worker /twiml": (target.workers["guarded"][0], f"/twiml/{target.agent}", "plain"),
    }
    rows = []
    for label, (base, path, kind) in cases.items():
        port = int(base.rsplit(":", 1)[1])
        head = (
            f"POST {path}?workspace_id=acme HTTP/1.1\r\nHost: x\r\nContent-Type: "
            f"{'application' if kind != 'plain' else 'text'}/{kind}\r\nContent-Length: 5000\r\n\r\n"
        ).encode()
        sockets = []
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.sendall(head)
            sockets.append(sock)
        open_at: dict[float, int] = {}
        started = time.monotonic()
        for checkpoint in (1.0, 6.0):
            while time.monotonic() - started < checkpoint:
                for sock in sockets:
                    with contextlib.suppress(OSError):  # a byte every 0.5 s: no long silence
                        sock.send(b"a")
                time.sleep(0.5)
            open_at[checkpoint] = sum(1 for sock in sockets if still_open(sock))
        for sock in sockets:
            sock.close()
        rows.append(
            (
                f"300 slow bodies: {label}",
                "300 connections from one address, a byte every 0.5 s",
                "at most 64 held; none open past the 3 s deadline",
                f"open after 1 s: {open_at[1.0]}; after 6 s: {open_at[6.0]}",
            )
        )
    return rows


def still_open(sock: socket.socket) -> bool:
    try:
        data = sock.recv(4096)
    except BlockingIOError:
        return True
    except OSError:
        return False
    if not data:
        return False
    return not data.startswith(b"HTTP/1.1 ")  # answered (408/413/...) counts as ended


async def replays(target: Target) -> list[Row]:
    worker, _ = target.workers["guarded"]
    warm_before = metric(worker, WARM_STARTED)
    captured = twilio_params()
    tokens = [
        stream_token(await asyncio.to_thread(target.twiml, worker, captured)) for _ in range(5)
    ]
    calls = {call_id_of(t) for t in tokens if t}
    await asyncio.sleep(0.3)
    warm = metric(worker, WARM_STARTED) - warm_before
    rows = [
        (
            "signed Twilio webhook posted 5 times",
            "one captured request, replayed",
            "1 call, 1 warm session",
            f"{len(calls)} call(s); {warm:.0f} warm session(s) started",
        )
    ]
    token = next(t for t in tokens if t)
    await phone(target.media[worker], target.agent, token, seconds=0.5)
    after = stream_token(await asyncio.to_thread(target.twiml, worker, captured))
    rows.append(
        (
            "the same webhook after its stream connected",
            "replay once the call is claimed",
            "no stream (polite hang-up)",
            "a stream" if after else "no stream",
        )
    )
    target.api("PATCH", "/api/v1/workspaces/acme/settings", json={"max_concurrent_calls": 3})
    captured = twilio_params()
    for _ in range(6):
        await asyncio.to_thread(target.twiml, worker, captured)
    real = [
        stream_token(await asyncio.to_thread(target.twiml, worker, twilio_params()))
        for _ in range(2)
    ]
    rows.append(
        (
            "replays vs a cap of 3",
            "one captured webhook replayed 6 times, then 2 real calls",
            "2 of 2 real calls answered",
            f"{sum(1 for t in real if t)} of 2 answered",
        )
    )
    target.api("PATCH", "/api/v1/workspaces/acme/settings", json={"max_concurrent_calls": 100})
    other = target.api(
        "POST",
        "/api/v1/workspaces/acme/agents",
        json={"name": "Bea", "pricing_tier": "grok-realtime", "voice": "Eve"},
    ).json()["id"]
    body = urlencode({"CallControlId": f"v3:{secrets.token_hex(8)}", "From": "+15550100"}).encode()
    now = int(time.time())
    first = await asyncio.to_thread(target.texml, worker, body, now)
    elsewhere = await asyncio.to_thread(target.texml, worker, body, now, other)
    rows.append(
        (
            "a Telnyx body posted to another agent",
            "the same signed body, to a second agent of the workspace",
            "first answered, second not",
            f"first {'answered' if '<Stream' in first else 'refused'}, "
            f"second {'answered' if '<Stream' in elsewhere else 'refused'}",
        )
    )
    return rows


async def stolen_warm_session(target: Target) -> list[Row]:
    worker, _ = target.workers["guarded"]
    token = stream_token(await asyncio.to_thread(target.twiml, worker, twilio_params()))
    assert token
    await asyncio.sleep(0.3)  # the warm session is set up
    claimed = target.api(
        "POST",
        "/api/v1/calls/claim",
        token=target.service,
        json={"stream_token": token, "agent_id": target.agent, "stream": "phone"},
    )
    heard, code = await phone(target.media[worker], target.agent, token, seconds=1.5)
    return [
        (
            "a token used on another worker, on the warm one",
            "claim the token elsewhere, then stream it here and speak",
            "closed 4401 with 0 agent frames",
            f"claim elsewhere {claimed.status_code}; closed {code}; {heard} agent frames",
        )
    ]


def sign_in(base: str, password: str, source: str, forwarded: str | None = None) -> int:
    transport = httpx.HTTPTransport(local_address=source)
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    with httpx.Client(base_url=base, transport=transport, headers=headers) as http:
        page = http.get("/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf, page[:200]
        form = {"email": ADMIN_EMAIL, "password": password, "csrf": csrf[1]}
        return http.post("/login", data=form, follow_redirects=False).status_code


def lockout(target: Target) -> list[Row]:
    base = target.control_plane
    admin = []
    for round_ in range(3):
        for guess in range(6):
            sign_in(base, f"wrong {round_}-{guess}", f"127.0.{round_ + 1}.{guess + 1}")
        admin.append(sign_in(base, ADMIN_PASSWORD, "127.0.0.1"))
    spoofed = [
        sign_in(base, f"wrong {i}", "127.0.9.9", forwarded=f"203.0.113.{i}") for i in range(22)
    ]
    return [
        (
            "admin lock-out from rotating addresses",
            "6 wrong guesses from fresh addresses, then the admin; 3 rounds",
            "the admin gets in every round (303)",
            "admin: " + ", ".join(map(str, admin)),
        ),
        (
            "X-Forwarded-For to reset the address count",
            "22 guesses from one address, each with a new X-Forwarded-For",
            "locked at its limit (429) anyway",
            f"last answers {spoofed[-3:]}",
        ),
    ]


def warning_lines(log: Path, since: int) -> list[str]:
    return [
        line
        for line in log.read_bytes()[since:].decode(errors="replace").splitlines()
        if " WARNING " in line or " ERROR " in line
    ]


async def log_flood(target: Target) -> list[Row]:
    """Refusals anyone can cause, by the hundred: what they write to the servers' logs."""
    worker, _ = target.workers["guarded"]
    logs = [target.logs["guarded"], target.logs["control_plane"]]
    offsets = [log.stat().st_size for log in logs]
    url = f"{worker}/twiml/{target.agent}?workspace_id=acme"
    async with httpx.AsyncClient() as http:
        statuses = {
            (
                await http.post(url, data=twilio_params(), headers={"X-Twilio-Signature": "bm8="})
            ).status_code
            for _ in range(200)
        }
    closes = set()
    for index in range(200):
        token = "" if index % 2 else f"made-up-{index}"
        closes.add((await phone(target.media[worker], target.agent, token, seconds=0.5))[1])
    await asyncio.sleep(0.5)
    worker_lines, control_plane_lines = (
        warning_lines(log, offset) for log, offset in zip(logs, offsets, strict=True)
    )
    kinds = (
        "issue:webhook_signature_invalid",
        "stream:no_usable_token",
        "claim:stream_token_invalid",
    )
    counted = sum(
        metric(worker, f'switchboard_worker_refusals_total{{kind="{kind}"}}') for kind in kinds
    )
    return [
        (
            "a flood of refusals in the logs",
            "200 unsigned webhooks, 200 streams with no token or a made-up one",
            "403s and 4401s; <= 1 warning line per kind on each server; all 400 counted",
            f"{sorted(statuses)}, {sorted(closes)}; worker {len(worker_lines)} line(s), "
            f"control plane {len(control_plane_lines)}; {counted:.0f} counted in /metrics",
        )
    ]


def small_ones(target: Target) -> list[Row]:
    from control_plane.outbound import is_public

    wrapped = ["::127.0.0.1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::"]
    call = target.api(
        "POST",
        f"/api/v1/workspaces/acme/agents/{target.agent}/calls",
        token=target.service,
        json={"channel": "api"},
    ).json()["call_id"]
    rated = target.api("POST", f"/api/v1/calls/{call}/feedback", json={"score": 10})
    return [
        (
            "webhook guard: IPv4 inside IPv6",
            ", ".join(wrapped),
            "not public",
            ", ".join("public" if is_public(a) else "not public" for a in wrapped),
        ),
        (
            "feedback for a call that never connected",
            "issue a call, rate it 10 without a stream or report",
            "409 call_not_connected",
            f"{rated.status_code} {rated.json().get('code', '')}",
        ),
    ]


# --- running it ------------------------------------------------------------------------------


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-redteam-"))
    fake_port, cp_port = free_port(), free_port()
    processes = [
        start(
            [sys.executable, "-m", "tests.fakes.run_fake_xai", str(fake_port), XAI_KEY],
            dict(os.environ),
            f"http://127.0.0.1:{fake_port}/v1/api-key",
        )
    ]
    try:
        target = prepare(workdir, fake_port)
        bin_dir = Path(sys.executable).parent
        env = {**target.env, "SWITCHBOARD_HTTP_BODY_TIMEOUT_SECONDS": "3"}
        processes.append(
            start(
                [str(bin_dir / "switchboard"), "serve", "--port", str(cp_port)],
                env,
                f"http://127.0.0.1:{cp_port}/healthz",
                log=workdir / "control_plane.log",
            )
        )
        target.logs["control_plane"] = workdir / "control_plane.log"
        target.control_plane = f"http://127.0.0.1:{cp_port}"
        for name in ("guarded", "unguarded", "capped"):
            port = free_port()
            worker_env = {
                **env,
                "SWITCHBOARD_SERVICE_TOKEN": target.service,
                "SWITCHBOARD_CONTROL_PLANE_URL": target.control_plane,
                "SWITCHBOARD_WORKER_PUBLIC_URL": f"http://127.0.0.1:{port}",
                **({"SWITCHBOARD_WORKER_MAX_CALLS": "4"} if name == "capped" else {}),
                "SWITCHBOARD_WORKER_BODY_TIMEOUT_SECONDS": "3",
                "SWITCHBOARD_TELNYX_PUBLIC_KEY": base64.b64encode(
                    target.telnyx_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                ).decode(),
            }
            media_port = free_port()
            worker_env["SWITCHBOARD_WORKER_MEDIA_PORT"] = str(media_port)  # `unguarded` reads it
            args = (
                [str(bin_dir / "switchboard"), "worker", "--port", str(port)]
                if name != "unguarded"
                else [
                    sys.executable, "-m", "uvicorn", "bench.redteam:unguarded_worker",
                    "--factory", "--port", str(port), "--log-level", "warning",
                    "--ws-max-size", str(16 * MIB),
                ]
            )  # fmt: skip
            target.logs[name] = workdir / f"{name}.log"
            processes.append(
                start(args, worker_env, f"http://127.0.0.1:{port}/healthz", log=target.logs[name])
            )
            target.workers[name] = (f"http://127.0.0.1:{port}", processes[-1].pid)
            target.media[f"http://127.0.0.1:{port}"] = f"ws://127.0.0.1:{media_port}"
        # The control plane needs the Telnyx key too: restart-free, it reads it per workspace.
        target.api(
            "PUT",
            "/api/v1/workspaces/acme/settings/api-keys",
            json={"telnyx_api_key": worker_env["SWITCHBOARD_TELNYX_PUBLIC_KEY"]},
        ).raise_for_status()
        rows = asyncio.run(run(target))
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=15)
    print()
    for scenario, tried, expected, observed in rows:
        print(f"- {scenario}\n    tried:    {tried}\n    expected: {expected}")
        print(f"    observed: {observed}")
    print(f"\nThe servers' output: {workdir}/*.log")


async def run(target: Target) -> list[Row]:
    rows = await huge_frames(target)  # first: each memory figure from a quiet worker
    rows += huge_body(target)
    rows += await anonymous_sockets(target)
    rows += slow_bodies(target)
    rows += await replays(target)
    rows += await stolen_warm_session(target)
    rows += lockout(target)
    rows += await log_flood(target)
    rows += small_ones(target)
    return rows


def prepare(workdir: Path, fake_port: int) -> Target:
    from sqlmodel import Session

    from control_plane.auth import service as auth_service
    from control_plane.auth.passwords import Passwords
    from control_plane.db import make_engine
    from control_plane.settings import Settings

    database_url = f"sqlite:///{workdir}/redteam.db"
    env, service, _reader, agent = prepare_control_plane(database_url, workdir, fake_port)
    env["SWITCHBOARD_TWILIO_AUTH_TOKEN"] = secrets.token_hex(16)
    env["SWITCHBOARD_XAI_BASE_URL"] = f"http://127.0.0.1:{fake_port}"
    settings = Settings(_env_file=None, database_url=database_url)
    engine = make_engine(settings)
    with Session(engine) as session:
        _, admin = auth_service.create_token(session, name="redteam-admin", scopes=["admin"])
        auth_service.create_user(
            session,
            Passwords(settings.password_hash_cost),
            email=ADMIN_EMAIL,
            password=ADMIN_PASSWORD,
            role="admin",
        )
        session.commit()
    engine.dispose()
    return Target(env, service, admin, agent)


if __name__ == "__main__":
    main()
