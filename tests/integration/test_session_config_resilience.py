"""Session configs across processes and through a database outage (PostgreSQL)."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from control_plane.app import create_app
from control_plane.auth import service as auth_service
from control_plane.db import make_engine
from control_plane.settings import Settings
from tests.conftest import PrivatePostgres, auth
from tests.fakes.server import BackgroundServer, free_port

pytestmark = pytest.mark.postgres
XAI_KEY = "xai-" + "ResilienceKey0123456789abc" + "Q9q9"


def tokens_for(url: str) -> tuple[str, str]:
    engine = make_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    with Session(engine) as session:
        _, admin = auth_service.create_token(session, name="admin", scopes=["admin"])
        _, service = auth_service.create_token(session, name="service", scopes=["service"])
        session.commit()
    engine.dispose()
    return admin, service


def prepare(http: httpx.Client, admin: str) -> str:
    """A workspace in the rollout, with a key and a Grok agent; returns the agent's path."""
    assert (
        http.post(
            "/api/v1/workspaces", json={"id": "acme", "name": "Acme"}, headers=auth(admin)
        ).status_code
        == 201
    )
    assert (
        http.put(
            "/api/v1/cohorts/internal", json={"members": ["acme"]}, headers=auth(admin)
        ).status_code
        == 200
    )
    assert (
        http.put(
            "/api/v1/workspaces/acme/settings/api-keys",
            json={"xai_api_key": XAI_KEY},
            headers=auth(admin),
        ).status_code
        == 200
    )
    agent = http.post(
        "/api/v1/workspaces/acme/agents",
        json={"name": "Ava", "pricing_tier": "grok-realtime", "voice": "marin"},
        headers=auth(admin),
    ).json()
    return f"/api/v1/workspaces/acme/agents/{agent['id']}"


def outage_settings(server: PrivatePostgres, tmp_path: Path) -> Settings:
    """Switchboard on the test's own PostgreSQL, failing writes within 2 s when it is away."""
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        environment="test",
        database_url=server.url(),
        master_key_file=tmp_path / "master.key",
        database_timeout_seconds=2,
    )


def wait_until(predicate, seconds: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {seconds} s")


@pytest.fixture
def two_processes(private_postgres: PrivatePostgres, tmp_path: Path) -> Iterator[list[str]]:
    """Two Switchboard server processes on one PostgreSQL database."""
    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": private_postgres.url(),
        "SWITCHBOARD_ENVIRONMENT": "test",
        "SWITCHBOARD_MASTER_KEY_FILE": str(tmp_path / "master.key"),
    }
    # Create the key file once, so both processes share the keyring.
    from control_plane.keys.crypto import Keyring

    Keyring.from_settings(outage_settings(private_postgres, tmp_path))
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "control_plane.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url in urls:
            wait_until(lambda url=url: _up(url), 30)
        yield urls
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_change_through_one_process_is_served_by_the_other(
    two_processes: list[str], private_postgres: PrivatePostgres
) -> None:
    admin, service = tokens_for(private_postgres.url())
    one, other = (httpx.Client(base_url=url, timeout=10) for url in two_processes)
    agent_path = prepare(one, admin)
    config_path = f"{agent_path}/session-config"
    assert other.get(config_path, headers=auth(service)).json()["session"]["voice"] == "Ara"
    assert (
        other.get(config_path, headers=auth(service)).json()["session"]["voice"] == "Ara"
    )  # cached now

    assert one.patch(agent_path, json={"voice": "Leo"}, headers=auth(admin)).status_code == 200
    elapsed = wait_until(
        lambda: other.get(config_path, headers=auth(service)).json()["session"]["voice"] == "Leo",
        1.0,
    )
    assert elapsed < 1.0
    # A flag change travels the same way: killed in one, refused by the other.
    assert one.post("/api/v1/flags/grok-realtime-tier/kill", headers=auth(admin)).status_code == 200
    wait_until(lambda: other.get(config_path, headers=auth(service)).status_code == 403, 1.0)
    assert other.get(config_path, headers=auth(service)).json()["code"] == "tier_disabled"


def test_database_outage_serves_last_known_good_and_never_500(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    admin, service = tokens_for(private_postgres.url())
    settings = outage_settings(private_postgres, tmp_path)
    app = create_app(settings)
    with (
        BackgroundServer(app) as server,
        httpx.Client(base_url=server.base_url, timeout=15) as http,
    ):
        agent_path = prepare(http, admin)
        config_path = f"{agent_path}/session-config"
        healthy = http.get(config_path, headers=auth(service))
        assert healthy.status_code == 200 and healthy.json()["stale"] is False

        private_postgres.stop()
        wait_until(lambda: not app.state.change_feed.listening.is_set(), 5)
        for _ in range(20):
            stale = http.get(config_path, headers=auth(service))
            assert stale.status_code == 200
            assert stale.json()["stale"] is True
            assert stale.headers["x-switchboard-stale"] == "true"
            assert stale.json()["session"]["voice"] == "Ara"
        started = time.monotonic()
        write = http.patch(agent_path, json={"voice": "Leo"}, headers=auth(admin))
        assert write.status_code == 503
        assert write.json()["code"] == "database_unavailable"
        assert time.monotonic() - started < 5  # fails fast
        assert http.get("/readyz").status_code == 503
        unknown = http.get(f"{agent_path}x/session-config", headers=auth(service))
        assert unknown.status_code == 503  # nothing known to fall back on: a clear 503, not a 500

        private_postgres.start()
        wait_until(
            lambda: http.get(config_path, headers=auth(service)).json()["stale"] is False, 15
        )
        # Nothing half-applied: the refused write did not happen; a new one does.
        assert http.get(config_path, headers=auth(service)).json()["session"]["voice"] == "Ara"
        assert http.patch(agent_path, json={"voice": "Leo"}, headers=auth(admin)).status_code == 200
        assert http.get(config_path, headers=auth(service)).json()["session"]["voice"] == "Leo"


def test_outage_under_load_keeps_reads_up_and_loses_no_acknowledged_write(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    import threading

    admin, service = tokens_for(private_postgres.url())
    settings = outage_settings(private_postgres, tmp_path)
    with BackgroundServer(create_app(settings)) as server:
        with httpx.Client(base_url=server.base_url, timeout=15) as http:
            agent_path = prepare(http, admin)
            assert (
                http.get(f"{agent_path}/session-config", headers=auth(service)).status_code == 200
            )
        stop = threading.Event()
        reads: list[tuple[int, bool]] = []
        refusals: list[str] = []
        writes: list[int] = []
        acknowledged: list[str] = []

        def reader() -> None:
            with httpx.Client(base_url=server.base_url, timeout=15) as http:
                while not stop.is_set():
                    response = http.get(f"{agent_path}/session-config", headers=auth(service))
                    if response.status_code != 200:
                        refusals.append(response.text)
                    reads.append(
                        (
                            response.status_code,
                            response.status_code == 200 and response.json()["stale"],
                        )
                    )
                    time.sleep(0.01)

        def writer(index: int) -> None:
            with httpx.Client(base_url=server.base_url, timeout=15) as http:
                n = 0
                while not stop.is_set():
                    n += 1
                    response = http.post(
                        "/api/v1/workspaces/acme/agents",
                        json={"name": f"w{index}-{n}", "pricing_tier": "premium", "voice": "alloy"},
                        headers=auth(admin),
                    )
                    writes.append(response.status_code)
                    if response.status_code == 201:
                        acknowledged.append(response.json()["id"])
                    time.sleep(0.02)

        threads = [threading.Thread(target=reader) for _ in range(2)] + [
            threading.Thread(target=writer, args=(i,)) for i in range(2)
        ]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        private_postgres.stop()
        time.sleep(2.5)
        private_postgres.start()
        time.sleep(3.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

        assert {status for status, _ in reads} == {200}, refusals[:3]
        assert any(stale for _, stale in reads), "the outage was served from last known good"
        assert set(writes) <= {201, 503} and 503 in writes and writes[-1] == 201
        with httpx.Client(base_url=server.base_url, timeout=15) as http:
            stored = {
                a["id"]
                for a in http.get("/api/v1/workspaces/acme/agents", headers=auth(admin)).json()[
                    "agents"
                ]
            }
        assert set(acknowledged) <= stored, "every acknowledged write survived"
        assert len(acknowledged) > 20
