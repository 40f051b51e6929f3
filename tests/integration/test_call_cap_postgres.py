"""The per-workspace call cap holds across processes: two Switchboard processes on one
PostgreSQL database, a call worker in front of each, 31 phone calls at once on a cap of 30 →
exactly 30 reach xAI and one caller hears busy."""

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr
from sqlmodel import Session
from websockets.asyncio.client import connect

from control_plane.auth import service as auth_service
from control_plane.db import make_engine
from control_plane.keys.crypto import Keyring
from control_plane.settings import Settings
from switchboard_runtime.session import MemoryTelemetrySink
from switchboard_runtime.worker import WorkerSettings, create_worker_app
from tests.conftest import PostgresDatabases, auth
from tests.fakes.fake_xai import FakeXAIState, build_app
from tests.fakes.server import BackgroundServer, free_port
from tests.integration.callstack import (
    XAI_KEY,
    Phone,
    Stack,
    answer_twilio,
    poll,
    provision,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def database(postgres_databases: PostgresDatabases) -> Iterator[str]:
    name = postgres_databases.create()
    yield postgres_databases.url_for(name)
    postgres_databases.drop(name)


def serve(database_url: str, tmp_path: Path, xai_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_ENVIRONMENT": "test",
        "SWITCHBOARD_MASTER_KEY_FILE": str(tmp_path / "master.key"),
        "SWITCHBOARD_XAI_REALTIME_URL": xai_url.replace("http://", "ws://") + "/v1/realtime",
    }
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "control_plane.app:create_app", "--factory"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
        ],
        env=env,
    )
    return process, f"http://127.0.0.1:{port}"


def wait_ready(url: str) -> None:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not become ready")


async def test_31_calls_on_a_cap_of_30_across_two_processes(database: str, tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        environment="test",
        database_url=database,
        master_key_file=tmp_path / "master.key",
    )
    keyring = Keyring.from_settings(settings)  # makes the key file both processes share
    engine = make_engine(settings)
    with Session(engine) as session:
        _, admin = auth_service.create_token(session, name="admin", scopes=["admin"])
        _, service = auth_service.create_token(session, name="service", scopes=["service"])
        session.commit()
    engine.dispose()
    xai = FakeXAIState(accepted_keys={XAI_KEY})
    twilio_token, telnyx_key = secrets.token_hex(16), Ed25519PrivateKey.generate()
    with BackgroundServer(build_app(xai)) as fake:
        servers = [serve(database, tmp_path, fake.base_url) for _ in range(2)]
        try:
            for _, url in servers:
                wait_ready(url)
            with httpx.Client(base_url=servers[0][1], headers=auth(admin)) as http:
                agent_id = provision(http, twilio_token, telnyx_key, max_concurrent_calls=30)
            stacks = []
            telemetry = MemoryTelemetrySink()
            workers = []
            for _, url in servers:
                port = free_port()
                worker_settings = WorkerSettings(  # type: ignore[call-arg]
                    _env_file=None,
                    environment="test",
                    control_plane_url=url,
                    service_token=SecretStr(service),
                    worker_public_url=f"http://127.0.0.1:{port}",
                )
                app = create_worker_app(worker_settings, telemetry=telemetry)
                workers.append(BackgroundServer(app, port=port).start())
                stacks.append(
                    Stack(
                        control_plane=url,
                        worker=f"http://127.0.0.1:{port}",
                        service_token=service,
                        admin_token=admin,
                        agent_id=agent_id,
                        xai=xai,
                        telemetry=telemetry,
                        tool_log=[],
                        twilio_auth_token=twilio_token,
                        telnyx_key=telnyx_key,
                        database_url=database,
                        stream_token_key=keyring.derive_key("switchboard stream tokens v1"),
                        worker_app=app,
                        worker_settings=worker_settings,
                    )
                )
            try:
                answers = await asyncio.gather(*(answer_twilio(stacks[i % 2]) for i in range(31)))
                streams = [a for a in answers if a.stream_token]
                busy = [a for a in answers if '<Reject reason="busy"/>' in a.text]
                assert (len(streams), len(busy)) == (30, 1), [a.text[:80] for a in answers]
                phones = []
                for answer in streams:
                    websocket = await connect(answer.stream_url)
                    phone = Phone("twilio", websocket)
                    await phone.start({"stream_token": answer.stream_token or ""})
                    phones.append(phone)
                await poll(lambda: len(xai.connections) >= 30, seconds=20)
                await asyncio.sleep(0.2)
                assert len(xai.connections) == 30
                async with httpx.AsyncClient(headers=auth(admin)) as http:
                    listed = await http.get(f"{servers[1][1]}/api/v1/workspaces/acme/calls")
                assert listed.json()["active"] == 30
                for phone in phones:
                    await phone.hang_up()
                    await phone.ws.close()
            finally:
                for worker in workers:
                    worker.stop()
        finally:
            for process, _ in servers:
                process.terminate()
                process.wait(timeout=10)
