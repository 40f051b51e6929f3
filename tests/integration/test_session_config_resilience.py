"""Session configs across processes and through a database outage (PostgreSQL)."""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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


PROPAGATION_BOUND = 10.0  # seconds


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
    # Configs have no expiry: without LISTEN/NOTIFY the other process would serve Ara forever.
    # The bound is generous because shared machines are slow, not because propagation is.
    wait_until(
        lambda: other.get(config_path, headers=auth(service)).json()["session"]["voice"] == "Leo",
        PROPAGATION_BOUND,
    )
    # A flag change travels the same way: killed in one, refused by the other.
    assert one.post("/api/v1/flags/grok-realtime-tier/kill", headers=auth(admin)).status_code == 200
    wait_until(
        lambda: other.get(config_path, headers=auth(service)).status_code == 403, PROPAGATION_BOUND
    )
    assert other.get(config_path, headers=auth(service)).json()["code"] == "tier_disabled"
    # The catalogue the frontend reads travels the same way: a tier edit, then availability.
    assert other.get("/api/v1/tiers/budget").json()["name"] != "Thrift"  # cached there now
    assert one.patch(
        "/api/v1/tiers/budget", json={"name": "Thrift"}, headers=auth(admin)
    ).is_success
    wait_until(
        lambda: other.get("/api/v1/tiers/budget").json()["name"] == "Thrift", PROPAGATION_BOUND
    )
    view = {"params": {"workspace_id": "acme"}, "headers": auth(admin)}
    assert other.get("/api/v1/tiers/grok-realtime", **view).json()["available"] is False
    assert one.post("/api/v1/flags/grok-realtime-tier/resume", headers=auth(admin)).is_success
    wait_until(
        lambda: other.get("/api/v1/tiers/grok-realtime", **view).json()["available"] is True,
        PROPAGATION_BOUND,
    )


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


READ_AGENTS = 20


class Load:
    """Two readers over many session-config keys and two writers of four kinds, until stopped.

    Writes: agents created (201), agents edited and keys rotated (both invalidate cached
    configs, so reads of those keys must fall back to the last known good), cohorts rewritten.
    Every write's answer and duration is kept; ids of acknowledged agents are kept to check
    they survived."""

    def __init__(self, base_url: str, admin: str, service: str, agent_paths: list[str]) -> None:
        import threading

        self.base_url, self.admin, self.service = base_url, admin, service
        self.agent_paths = agent_paths
        self.stop = threading.Event()
        self.reads: list[tuple[int, bool]] = []
        self.served: set[str] = set()  # paths answered 200 at least once
        self.refusals: list[str] = []
        self.writes: list[tuple[str, int, float]] = []
        self.acknowledged: list[str] = []
        self.threads = [threading.Thread(target=self._reader, args=(i,)) for i in range(2)] + [
            threading.Thread(target=self._writer, args=(i,)) for i in range(2)
        ]

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in self.threads), "a request never returned"

    def _reader(self, index: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            n = index
            while not self.stop.is_set():
                n += 1
                path = self.agent_paths[n % len(self.agent_paths)]
                response = http.get(f"{path}/session-config", headers=auth(self.service))
                if response.status_code == 200:
                    self.served.add(path)
                else:
                    self.refusals.append(response.text)
                stale = response.status_code == 200 and response.json()["stale"]
                self.reads.append((response.status_code, stale))
                time.sleep(0.01)

    def served_every_path(self) -> bool:
        """Every key has a last known good config: only those can be served through an outage."""
        return self.served == set(self.agent_paths)

    def _writer(self, index: int) -> None:
        kinds = ["create", "edit", "rotate", "cohort"]
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            n = 0
            while not self.stop.is_set():
                n += 1
                kind = kinds[n % len(kinds)]
                started = time.monotonic()
                if kind == "create":
                    body = {"name": f"w{index}-{n}", "pricing_tier": "premium", "voice": "alloy"}
                    response = http.post(
                        "/api/v1/workspaces/acme/agents", json=body, headers=auth(self.admin)
                    )
                    if response.status_code == 201:
                        self.acknowledged.append(response.json()["id"])
                elif kind == "edit":
                    path = self.agent_paths[n % len(self.agent_paths)]
                    body = {"instructions": f"revision {index}-{n}"}
                    response = http.patch(path, json=body, headers=auth(self.admin))
                elif kind == "rotate":
                    body = {"xai_api_key": XAI_KEY[:-4] + f"{index}{n:03d}"[-4:]}
                    response = http.put(
                        "/api/v1/workspaces/acme/settings/api-keys",
                        json=body,
                        headers=auth(self.admin),
                    )
                else:
                    response = http.put(
                        "/api/v1/cohorts/beta-1",
                        json={"members": ["acme"], "description": f"{index}-{n}"},
                        headers=auth(self.admin),
                    )
                self.writes.append((kind, response.status_code, time.monotonic() - started))
                time.sleep(0.02)


def loaded_agents(http: httpx.Client, admin: str) -> list[str]:
    first = prepare(http, admin)
    paths = [first]
    for index in range(READ_AGENTS - 1):
        agent = http.post(
            "/api/v1/workspaces/acme/agents",
            json={"name": f"Reader {index}", "pricing_tier": "grok-realtime", "voice": "marin"},
            headers=auth(admin),
        )
        assert agent.status_code == 201, agent.text
        paths.append(f"/api/v1/workspaces/acme/agents/{agent.json()['id']}")
    return paths


def assert_survived(load: Load, http: httpx.Client, admin: str, longest_write: float) -> None:
    assert {status for status, _ in load.reads} == {200}, load.refusals[:3]
    assert any(stale for _, stale in load.reads), "the outage was served from last known good"
    statuses = {status for _, status, _ in load.writes}
    assert statuses <= {200, 201, 503}, statuses
    assert 503 in statuses, "some writes met the outage"
    assert {kind for kind, status, _ in load.writes[-8:] if status in (200, 201)} == {
        "create",
        "edit",
        "rotate",
        "cohort",
    }, "every kind of write works again"
    slowest = max(seconds for _, _, seconds in load.writes)
    assert slowest < longest_write, f"a write took {slowest:.1f} s"
    stored: set[str] = set()
    cursor = None
    while True:
        params = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        listed = http.get("/api/v1/workspaces/acme/agents", params=params, headers=auth(admin))
        stored |= {a["id"] for a in listed.json()["agents"]}
        if (cursor := listed.json()["next_cursor"]) is None:
            break
    assert set(load.acknowledged) <= stored, "every acknowledged write survived"
    assert len(load.acknowledged) > 5


# How the database goes away, how it comes back, for how long, and the slowest write allowed.
OUTAGES: dict[
    str, tuple[Callable[[PrivatePostgres], None], Callable[[PrivatePostgres], None], float, float]
] = {
    # A crash: no goodbye to clients.
    "crash": (lambda pg: pg.stop("immediate"), PrivatePostgres.start, 2.5, 10),
    # An orderly shutdown: every session is told to go.
    "fast shutdown": (lambda pg: pg.stop("fast"), PrivatePostgres.start, 2.5, 10),
    # A frozen server: connections stay open and never answer; without a bound on every wait,
    # requests would hold their worker threads until it woke up.
    "paused": (PrivatePostgres.pause, PrivatePostgres.resume, 8.0, 7),
}


@pytest.mark.parametrize("outage", list(OUTAGES))
def test_outage_under_load_keeps_reads_up_and_loses_no_acknowledged_write(
    private_postgres: PrivatePostgres, tmp_path: Path, outage: str
) -> None:
    away, back, seconds, longest_write = OUTAGES[outage]
    admin, service = tokens_for(private_postgres.url())
    settings = outage_settings(private_postgres, tmp_path).model_copy(
        update={"database_query_timeout_seconds": 2.0}
    )
    with (
        BackgroundServer(create_app(settings)) as server,
        httpx.Client(base_url=server.base_url, timeout=15) as http,
    ):
        paths = loaded_agents(http, admin)
        with Load(server.base_url, admin, service, paths) as load:
            # On a slow machine the readers may need longer than the writers' head start to
            # reach every key once; the outage begins when every key has been served.
            wait_until(load.served_every_path, 60)
            time.sleep(1.5)
            away(private_postgres)
            try:
                time.sleep(seconds)
            finally:
                back(private_postgres)
            time.sleep(4.0)
        assert_survived(load, http, admin, longest_write=longest_write)


def test_without_the_bound_a_paused_database_hangs_requests(
    private_postgres: PrivatePostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_plane import db

    monkeypatch.setattr(
        db, "bounded_connection_class", lambda seconds: __import__("psycopg").Connection
    )
    admin, _ = tokens_for(private_postgres.url())
    with (
        BackgroundServer(create_app(outage_settings(private_postgres, tmp_path))) as server,
        httpx.Client(base_url=server.base_url, timeout=15) as http,
    ):
        agent_path = prepare(http, admin)
        private_postgres.pause()
        try:
            with pytest.raises(httpx.ReadTimeout):
                http.patch(agent_path, json={"instructions": "x"}, headers=auth(admin), timeout=6)
        finally:
            private_postgres.resume()
