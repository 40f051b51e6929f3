"""The two distributions as someone installs them, outside this checkout.

- switchboard-runtime alone, in a fresh virtual environment with only its own dependencies,
  runs a call against the control plane and the fake xAI (both in this test process).
- Both wheels, built here and installed (not editable) into another fresh environment in a
  temporary folder: `switchboard migrate`, `seed --demo`, `serve` up to /readyz with its pages
  and static files, then one signed Twilio call through `switchboard worker` to the fake xAI.

Both environments install their dependencies from the package index (pip's cache makes the
second run fast), so these tests take a minute or two.
"""

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect

from tests.fakes.fake_xai import FakeXAIState, build_app
from tests.fakes.server import BackgroundServer, free_port
from tests.integration.callstack import CALLER_FRAMES, XAI_KEY, Phone, Stack, poll

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# What the control plane brings and the runtime must not.
CONTROL_PLANE_ONLY = {"fastapi", "sqlalchemy", "sqlmodel", "alembic", "psycopg", "cryptography"}


@dataclass
class Venv:
    path: Path

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    def run(
        self, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            cwd=cwd,
            env={**clean_env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"{args}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
        return result

    def distributions(self, cwd: Path) -> set[str]:
        listed = json.loads(self.run("pip", "list", "--format", "json", cwd=cwd).stdout)
        return {d["name"].lower().replace("_", "-") for d in listed}


def clean_env() -> dict[str, str]:
    """Nothing of this checkout or its virtual environment: no PYTHONPATH, no VIRTUAL_ENV."""
    keep = ("HOME", "LANG", "PIP_INDEX_URL", "PIP_FIND_LINKS", "PIP_DEFAULT_TIMEOUT", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep or k.endswith("_CA_BUNDLE")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def new_venv(where: Path) -> Venv:
    subprocess.run(
        [getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(where)],
        check=True,
        timeout=120,
    )
    return Venv(where)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both wheels, built from this checkout as a release would build them: by pip in a fresh
    environment (the checkout's own environment is uv's and has no pip)."""
    out = tmp_path_factory.mktemp("wheels")
    builder = new_venv(tmp_path_factory.mktemp("build") / "venv")
    builder.run("pip", "wheel", "--no-deps", "-q", "-w", str(out), "./runtime", ".", cwd=ROOT)
    found = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert set(found) == {"switchboard", "switchboard_runtime"}, found
    # The runtime's wheel carries its frame relay compiled for this platform.
    with zipfile.ZipFile(found["switchboard_runtime"]) as wheel:
        relay = [name for name in wheel.namelist() if "/frame_relay" in name]
    assert ".so" in {Path(name).suffix for name in relay}, relay
    return {"switchboard": found["switchboard"], "runtime": found["switchboard_runtime"]}


# --- the runtime alone --------------------------------------------------------------------------

CALL = """
import asyncio, json, sys
from switchboard_runtime import AudioOut, GrokRealtimeSession

async def main(control_plane, token, agent, frames, replies):
    audio = []
    async with GrokRealtimeSession(
        control_plane_url=control_plane, service_token=token, workspace_id="acme", agent_id=agent
    ) as call:
        for payload in frames:
            await call.send_audio(payload)
        async for event in call.events():
            if isinstance(event, AudioOut):
                audio.append(event.payload)
            if len(audio) >= replies:
                break
    print(json.dumps({"audio": audio, "report": call.telemetry.call_id}))

asyncio.run(main(*sys.argv[1:4], json.loads(sys.argv[4]), int(sys.argv[5])))
"""


def test_the_runtime_alone_runs_a_call(
    stack: Stack, wheels: dict[str, Path], tmp_path: Path
) -> None:
    venv = new_venv(tmp_path / "runtime-venv")
    venv.run("pip", "install", "-q", str(wheels["runtime"]), cwd=tmp_path)
    installed = venv.distributions(tmp_path)
    assert "switchboard-runtime" in installed and "switchboard" not in installed
    assert not installed & CONTROL_PLANE_ONLY, installed & CONTROL_PLANE_ONLY

    script = tmp_path / "call.py"
    script.write_text(textwrap.dedent(CALL))
    replies = len(stack.xai.reply_audio)
    result = venv.run(
        "python",
        str(script),
        stack.control_plane,
        stack.service_token,
        stack.agent_id,
        json.dumps(CALLER_FRAMES),
        str(replies),
        cwd=tmp_path,
    )
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    sent = [base64.b64encode(chunk).decode() for chunk in stack.xai.reply_audio]
    assert answer["audio"] == sent  # the agent's audio, byte for byte
    connection = stack.xai.connections[-1]
    assert [e["audio"] for e in connection.of_type("input_audio_buffer.append")] == CALLER_FRAMES
    with httpx.Client(base_url=stack.control_plane) as http:
        calls = http.get(
            "/api/v1/workspaces/acme/calls",
            headers={"Authorization": f"Bearer {stack.admin_token}"},
        ).json()["calls"]
    reported = next(c for c in calls if c["id"] == answer["report"])
    assert reported["state"] == "ended"  # its report reached the control plane


# --- both wheels, outside the checkout ----------------------------------------------------------


@pytest.fixture
def fake_xai() -> Iterator[tuple[FakeXAIState, str]]:
    state = FakeXAIState(accepted_keys={XAI_KEY})
    with BackgroundServer(build_app(state)) as server:
        yield state, server.base_url


def wait_ready(url: str, process: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{url}: the server exited"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200")


@dataclass
class Installed:
    """Both wheels in a fresh environment, serving: the control plane and the call worker."""

    control_plane: str
    worker: str
    tokens: dict[str, str]
    twilio_token: str


@pytest.fixture
def installed(
    wheels: dict[str, Path], tmp_path: Path, fake_xai: tuple[FakeXAIState, str]
) -> Iterator[Installed]:
    _, xai_url = fake_xai
    home = tmp_path / "install"  # nowhere near the checkout: no templates/ or migrations/ here
    home.mkdir()
    venv = new_venv(tmp_path / "venv")
    venv.run("pip", "install", "-q", str(wheels["runtime"]), str(wheels["switchboard"]), cwd=home)
    assert not (venv.distributions(home) & {"pytest", "schemathesis", "playwright"})

    cp_port, worker_port = free_port(), free_port()
    twilio_token = secrets.token_hex(16)
    env = {
        "SWITCHBOARD_DATABASE_URL": f"sqlite:///{home}/switchboard.db",
        "SWITCHBOARD_MASTER_KEY_FILE": str(home / "master.key"),
        "SWITCHBOARD_XAI_BASE_URL": xai_url,
        "SWITCHBOARD_XAI_REALTIME_URL": xai_url.replace("http://", "ws://") + "/v1/realtime",
        "SWITCHBOARD_TWILIO_AUTH_TOKEN": twilio_token,
    }
    assert "migrated to head" in venv.run("switchboard", "migrate", cwd=home, env=env).stdout
    seeded = venv.run("switchboard", "seed", "--demo", cwd=home, env=env).stdout
    tokens = dict(re.findall(r"^\s+(demo-\w+)\s+(\S+)$", seeded, re.M))
    assert {"demo-admin", "demo-service"} <= set(tokens)

    control_plane = f"http://127.0.0.1:{cp_port}"
    worker_env = {
        "SWITCHBOARD_SERVICE_TOKEN": tokens["demo-service"],
        "SWITCHBOARD_CONTROL_PLANE_URL": control_plane,
        "SWITCHBOARD_WORKER_PUBLIC_URL": f"http://127.0.0.1:{worker_port}",
    }
    servers = [
        subprocess.Popen(
            [str(venv.bin / "switchboard"), *command],
            cwd=home,
            env={**clean_env(), **env, **extra},
            text=True,
        )
        for command, extra in [
            (["serve", "--port", str(cp_port)], {}),
            (["worker", "--port", str(worker_port), "--media-port", "0"], worker_env),
        ]
    ]
    try:
        wait_ready(f"{control_plane}/readyz", servers[0])
        wait_ready(f"http://127.0.0.1:{worker_port}/healthz", servers[1])
        yield Installed(control_plane, f"http://127.0.0.1:{worker_port}", tokens, twilio_token)
    finally:
        for process in servers:
            process.terminate()
            process.wait(timeout=30)


async def test_both_wheels_serve_and_bridge_a_call_outside_the_checkout(
    installed: Installed, fake_xai: tuple[FakeXAIState, str]
) -> None:
    xai, _ = fake_xai
    admin = {"Authorization": f"Bearer {installed.tokens['demo-admin']}"}
    async with httpx.AsyncClient(base_url=installed.control_plane, headers=admin) as http:
        # The templates, static files and flags came with the wheel.
        assert "Sign in" in (await http.get("/login")).text
        assert (await http.get("/static/app.css")).status_code == 200
        flags = (await http.get("/api/v1/flags")).json()["flags"]
        assert any(f["name"] == "grok-realtime-tier" for f in flags)
        put = await http.put(
            "/api/v1/workspaces/acme/settings/api-keys", json={"xai_api_key": XAI_KEY}
        )
        assert put.status_code == 200, put.text
        agents = (await http.get("/api/v1/workspaces/acme/agents")).json()["agents"]
        agent_id = next(a["id"] for a in agents if a["pricing_tier"] == "grok-realtime")

    url = f"{installed.worker}/twiml/{agent_id}?workspace_id=acme"
    params = {"CallSid": "CA1", "From": "+15550100", "To": "+15550199"}
    signature = RequestValidator(installed.twilio_token).compute_signature(url, params)
    async with httpx.AsyncClient() as http:
        answer = await http.post(url, data=params, headers={"X-Twilio-Signature": signature})
    stream = re.search(r'<Stream url="([^"]+)"', answer.text)
    token = re.search(r'name="stream_token" value="([^"]+)"', answer.text)
    assert stream and token, answer.text
    # A second of agent audio paced as xAI sends it: most frames relay in the callback. (With
    # five frames, ~80 ms, a CI run on a busy host once saw none of them do so: a worker held up
    # for their span queues them all behind the first.)
    xai.reply_audio = [bytes([i % 250 + 1]) * 160 for i in range(50)]
    xai.delta_interval = 0.02
    async with connect(stream[1]) as websocket:
        phone = Phone("twilio", websocket)
        await phone.start({"stream_token": token[1]})
        await phone.speak(CALLER_FRAMES)
        await phone.collect(lambda p: len(p.media()) >= len(xai.reply_audio), seconds=20)
        await phone.hang_up()
    assert phone.media() == [base64.b64encode(c).decode() for c in xai.reply_audio]
    await poll(lambda: bool(xai.connections) and xai.connections[-1].closed, seconds=20)
    heard = [e["audio"] for e in xai.connections[-1].of_type("input_audio_buffer.append")]
    assert heard == CALLER_FRAMES
    # The installed worker relayed the agent's audio with its compiled relay (counted when the
    # bridge ended, before the session closed its xAI socket).
    async with httpx.AsyncClient() as http:
        scrape = (await http.get(f"{installed.worker}/metrics")).text
    compiled = re.search(r'audio_frames_total\{direction="agent",path="compiled"\} (\S+)', scrape)
    assert compiled and float(compiled[1]) > 0, scrape
