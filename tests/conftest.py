"""Shared fixtures: a migrated, seeded database on SQLite and on PostgreSQL, an app, tokens.

PostgreSQL tests need SWITCHBOARD_TEST_POSTGRES_URL (an admin URL; `make test` and `.ci/run` start
a throwaway server and set it). Without it they skip with that reason, except under CI=true, where
a missing PostgreSQL is an error: CI must run them.
"""

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from control_plane.app import create_app
from control_plane.auth import service as auth_service
from control_plane.calls.models import Call
from control_plane.catalogue.seed import seed_catalogue
from control_plane.core import new_id
from control_plane.db import make_engine
from control_plane.migrate import upgrade
from control_plane.rollout.service import seed_flags
from control_plane.settings import Settings
from tests.fakes.fake_xai import FakeXAIState, build_app
from tests.fakes.server import BackgroundServer

# Passwords hashed at argon2-cffi's cost for test suites (auth/passwords.py): every sign-in path
# runs as in production, at a thousandth of the cost; this process and every server it starts.
# tests/unit/test_passwords.py checks the standard cost on its own.
os.environ["SWITCHBOARD_PASSWORD_HASH_COST"] = "cheapest"

# Any truthy CI (true, 1, yes, …) means CI: there nothing may skip for a missing part.
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with the reason on a developer's machine; under CI, fail: CI must run everything."""
    if IN_CI:
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)


# --- secret scanning across the whole run ------------------------------------------------------
# Two nets, both fail the run. By value: every key a test stores (any `*_api_key` field sent over
# HTTP, and whatever a test plants with `plant_secret`) is a canary; it must never appear in a
# log record or an HTTP response again. By shape: anything that looks like an xAI or OpenAI key.
# The log net looks at records as handlers see them (after the redactor ran), so a secret the
# redactor's patterns miss — a Twilio auth token is plain hex — is caught here. The response net
# is one hook on httpx's transport: the test client, clients talking to background servers and
# schemathesis all pass through it. Only a session config may carry a key (that is its job).
# A key starts a word: the same letters inside a longer base64url string (a stream token's MAC
# holds "sk-" followed by 20 letters about once in 10,000 tokens) are not a key.
SECRET_PATTERN = re.compile(r"(?<![A-Za-z0-9_.-])(?:xai|sk)-[A-Za-z0-9]{20,}")
CANARIES: set[str] = set()
SECRET_LEAKS: list[str] = []
SCANNED: Counter[str] = Counter()  # what the nets looked at, printed at the end of the run
KEY_FIELD = re.compile(r"_api_key$")


def plant_secret(value: str) -> str:
    """Mark a value as secret for the rest of the run; returns it.

    Only values that could be keys: 16+ characters with some variety. A generated "dddd…" sent
    as a key would otherwise "leak" through any later text that happens to repeat that letter.
    """
    if len(value) >= 16 and len(set(value)) >= 8:
        CANARIES.add(value)
    return value


def secrets_in(text: str) -> list[str]:
    found = [m.group(0) for m in SECRET_PATTERN.finditer(text)]
    return found + [canary for canary in CANARIES if canary in text]


class SecretScanningHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        SCANNED["log records"] += 1
        text = record.getMessage() + (record.exc_text or "")
        for secret in secrets_in(text):
            SECRET_LEAKS.append(f"log {record.name}: {secret[:6]}… in {text[:120]!r}")


def _plant_keys_sent(body: bytes | str | None) -> None:
    if not body or "_api_key" not in (
        body if isinstance(body, str) else body.decode(errors="replace")
    ):
        return
    with contextlib.suppress(ValueError):
        sent = json.loads(body)
        if isinstance(sent, dict):
            for field, value in sent.items():
                if KEY_FIELD.search(str(field)) and isinstance(value, str):
                    plant_secret(value.strip())


def scan_response(url: str, status: int, text: str) -> None:
    SCANNED["responses"] += 1
    if status == 200 and url.split("?")[0].endswith("/session-config"):
        return
    for secret in secrets_in(text):
        SECRET_LEAKS.append(f"response {url} ({status}): {secret[:6]}…")


def _scan_exchange(path: str, sent: bytes | str | None, status: int, text: str) -> None:
    _plant_keys_sent(sent)
    scan_response(path, status, text)


def _install_transport_hook() -> None:
    """Wrap `send` of every HTTP client the tests use: httpx (clients of background servers),
    httpx2 (Starlette's TestClient) and requests (schemathesis)."""
    import httpx2
    import requests

    for client in (httpx.Client, httpx2.Client):
        sync_send = client.send

        def send(self: Any, request: Any, *args: Any, _send: Any = sync_send, **kw: Any) -> Any:
            response = _send(self, request, *args, **kw)
            if not kw.get("stream"):
                _scan_exchange(
                    request.url.path, request.content, response.status_code, response.text
                )
            return response

        client.send = send  # type: ignore[method-assign]
    for async_client in (httpx.AsyncClient, httpx2.AsyncClient):
        async_send = async_client.send

        async def asend(
            self: Any, request: Any, *args: Any, _send: Any = async_send, **kw: Any
        ) -> Any:
            response = await _send(self, request, *args, **kw)
            if not kw.get("stream"):
                _scan_exchange(
                    request.url.path, request.content, response.status_code, response.text
                )
            return response

        async_client.send = asend  # type: ignore[method-assign]
    requests_send = requests.Session.send

    def requests_scanned(self: Any, request: Any, **kw: Any) -> Any:
        response = requests_send(self, request, **kw)
        if not kw.get("stream"):
            _scan_exchange(request.path_url, request.body, response.status_code, response.text)
        return response

    requests.Session.send = requests_scanned  # type: ignore[method-assign]


class ScannedASGI:
    """Server-side net for servers whose clients run in another process (schemathesis run as
    users run it): every request body plants its keys, every response body is scanned."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:  # app.state and friends stay reachable
        return getattr(self.app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent, status, body = bytearray(), 0, bytearray()

        async def receive_seen() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                sent.extend(message.get("body", b""))
            return message

        async def send_seen(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if not message.get("more_body"):
                    _scan_exchange(
                        scope["path"], bytes(sent), status, body.decode(errors="replace")
                    )
            await send(message)

        await self.app(scope, receive_seen, send_seen)


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger().addHandler(SecretScanningHandler(level=logging.DEBUG))
    _install_transport_hook()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        # An xdist worker: its findings travel to the controller (pytest_testnodedown), which
        # reports for the whole run; a worker's own exit status would not fail the run.
        workeroutput["secret_scanner"] = {
            "scanned": {**SCANNED, "planted keys": len(CANARIES)},
            "leaks": SECRET_LEAKS,
        }
        return
    SCANNED["planted keys"] += len(CANARIES)
    print(
        f"\nsecret scanner: {SCANNED['responses']} responses, {SCANNED['log records']} log "
        f"records, {SCANNED['planted keys']} planted keys; {len(SECRET_LEAKS)} leaks"
    )
    if SECRET_LEAKS:
        print("\nSECRET LEAKS FOUND:\n  " + "\n  ".join(SECRET_LEAKS[:20]))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """On the xdist controller: add up what a worker's nets saw."""
    handed_over = getattr(node, "workeroutput", {}).get("secret_scanner")
    if handed_over:
        SCANNED.update(handed_over["scanned"])
        SECRET_LEAKS.extend(handed_over["leaks"])


# --- several workers (make test runs pytest-xdist with -n TEST_WORKERS) ------------------------
# Each module runs on one worker: its module-scoped stacks are built once, not once per worker it
# is spread over. The modules that drive the one unleash-server the run shares (their flags live
# in it) run on the same worker. Modules start in collection order (xdist's own reordering, by
# number of tests, is switched off below), so the slowest modules are collected first and the
# short ones fill in around them and at the end. Ranked by `--durations=0` of a whole run
# (seconds on one worker, 2026-12-06): 310, 229, 90, 74, 67, 66, 51, 48.
SHARED_GROUPS = {
    "test_unleash_compat.py": "unleash-server",
    "test_cache_coherence.py": "unleash-server",
}
SLOWEST_FIRST = (
    "test_cache_coherence.py",
    "test_unleash_compat.py",
    "test_property_based.py",
    "test_cli.py",
    "test_packages.py",
    "test_session_config_resilience.py",
    "test_secret_scanning.py",
    "test_telemetry.py",
    "test_call_entry.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)  # stable: within a rank, pytest's order stays


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's module scheduler with the shared-server modules as one scope. (Not `xdist_group`
    marks: `--dist loadgroup` carries them in the node id, which pytest 9.2 no longer lets a
    plugin change, so the marks are silently ignored; pytest-xdist issue 1386.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScopes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return SHARED_GROUPS.get(Path(module).name, module)

    # By default xdist runs the scopes with the most tests first, whatever their duration: the
    # slowest module (a few long tests) then started last and ran alone at the end.
    config.option.loadscopereorder = False
    return ModuleScopes(config, log)


POSTGRES_URL = os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL")


def require_postgres() -> str:
    if POSTGRES_URL:
        return POSTGRES_URL
    skip_or_fail("PostgreSQL not available: set SWITCHBOARD_TEST_POSTGRES_URL (make test does)")


def _seed(url: str) -> None:
    upgrade(url)
    engine = make_engine(Settings(database_url=url))
    with Session(engine) as session:
        seed_catalogue(session)
        seed_flags(session)
        session.commit()
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    _seed(f"sqlite:///{path}")
    return path


class PostgresDatabases:
    """Creates databases from one migrated, seeded template: cheap, isolated, real."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = make_url(admin_url)
        self.admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        self.template = f"sb_template_{uuid.uuid4().hex[:8]}"
        self._execute(f'CREATE DATABASE "{self.template}"')
        _seed(self.url_for(self.template))

    def url_for(self, name: str) -> str:
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def _execute(self, sql: str) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(sql))

    def create(self, *, empty: bool = False) -> str:
        """A database from the migrated, seeded template; or an empty one."""
        name = f"sb_test_{uuid.uuid4().hex[:12]}"
        template = "template0" if empty else self.template
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop(self, name: str) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self.drop(self.template)
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    databases = PostgresDatabases(require_postgres())
    yield databases
    databases.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> Iterator[str]:
    """A fresh, migrated and seeded database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "switchboard.db"
        shutil.copyfile(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    name = databases.create()
    yield databases.url_for(name)
    databases.drop(name)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=database_url,
        master_key_file=tmp_path / "master.key",
    )


@pytest.fixture
def app(settings: Settings):  # type: ignore[no-untyped-def]
    return create_app(settings)


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app) as test_client:
        yield test_client  # every response is scanned by the transport hook


@dataclass
class Tokens:
    admin: str
    service: str
    acme: str
    globex: str

    @staticmethod
    def header(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(client: TestClient) -> Tokens:
    """Two workspaces (acme, globex) and a token per scope."""
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        issued = {
            name: auth_service.create_token(session, name=name, scopes=scopes)[1]
            for name, scopes in {
                "admin": ["admin"],
                "service": ["service"],
                "acme": ["workspace:acme"],
                "globex": ["workspace:globex"],
            }.items()
        }
        session.commit()
    for workspace_id, name in (("acme", "Acme"), ("globex", "Globex")):
        response = client.post(
            "/api/v1/workspaces",
            json={"id": workspace_id, "name": name},
            headers=Tokens.header(issued["admin"]),
        )
        assert response.status_code == 201, response.text
    return Tokens(**issued)


def issued_grok_call(
    workspace_id: str,
    started_at: datetime,
    *,
    agent_id: str = "agt_sim",
    state: str = "active",
) -> Call:
    """A phone call on grok-realtime as the control plane issues one (its row, for tests that
    report on calls without dialling them)."""
    return Call(
        id=new_id("call"),
        workspace_id=workspace_id,
        agent_id=agent_id,
        tier="grok-realtime",
        engine="grok-realtime",
        provider="xai",
        channel="twilio",
        state=state,
        started_at=started_at,
        lease_expires_at=started_at + timedelta(minutes=5),
    )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class FakeXAI:
    state: FakeXAIState
    base_url: str


@pytest.fixture
def fake_xai() -> Iterator[FakeXAI]:
    """A fake xAI API on loopback; `state.accepted_keys` holds the keys it accepts."""
    state = FakeXAIState()
    with BackgroundServer(build_app(state)) as server:
        yield FakeXAI(state=state, base_url=server.base_url)


@dataclass
class UnleashServer:
    url: str
    admin_token: str
    client_token: str


@pytest.fixture(scope="session")
def unleash_server() -> UnleashServer:
    """The unleash-server 7.x that scripts/test-services.sh started (waits until healthy)."""
    import time

    import httpx

    url = os.environ.get("SWITCHBOARD_TEST_UNLEASH_URL")
    if not url:
        skip_or_fail(
            "unleash-server not running: set SWITCHBOARD_TEST_UNLEASH_URL (make test does)"
        )
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            log = Path(os.environ.get("SWITCHBOARD_TEST_UNLEASH_LOG", "/dev/null")).read_text()[
                -2000:
            ]
            pytest.fail(f"unleash-server did not become healthy in 180 s:\n{log}")
        time.sleep(0.5)
    return UnleashServer(
        url=url,
        admin_token=os.environ["SWITCHBOARD_TEST_UNLEASH_ADMIN_TOKEN"],
        client_token=os.environ["SWITCHBOARD_TEST_UNLEASH_CLIENT_TOKEN"],
    )


class PrivatePostgres:
    """A PostgreSQL server of the test's own, so it can be stopped and started at will."""

    def __init__(self, directory: Path) -> None:
        import subprocess

        self._subprocess = subprocess
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            skip_or_fail("PostgreSQL server binaries not found under /usr/lib/postgresql")
        self.bin = bins[-1].parent
        self.data = directory / "data"
        self.socket_dir = directory / "sock"
        self.socket_dir.mkdir()
        self.port = _free_port()
        self.run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.run_as:
            shutil.chown(directory, "postgres")
            shutil.chown(self.socket_dir, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()
        admin = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("CREATE DATABASE switchboard"))
        admin.dispose()

    def _run(self, tool: str, *args: str) -> None:
        self._subprocess.run(
            [*self.run_as, str(self.bin / tool), *args], check=True, capture_output=True
        )

    def url(self, database: str = "switchboard") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.data / "log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "immediate") -> None:
        """`immediate` is a crash (no goodbye to clients); `fast` ends every session first."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def _processes(self) -> list[int]:
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if parent == postmaster:
                    children.append(int(proc.name))
        return [postmaster, *children]

    def pause(self) -> None:
        """Freeze every server process: connections stay open and the kernel still accepts new
        ones, but nothing answers (as on a hung host or a partition)."""
        import signal

        # A backend forked while we stop the others would keep running: list again until every
        # process the postmaster has is stopped.
        stopped: set[int] = set()
        while fresh := [pid for pid in self._processes() if pid not in stopped]:
            for pid in fresh:
                self._signal(pid, signal.SIGSTOP)
                stopped.add(pid)

    def resume(self) -> None:
        import signal

        for pid in self._processes():
            self._signal(pid, signal.SIGCONT)

    @staticmethod
    def _signal(pid: int, signal_number: int) -> None:
        # A backend whose client has gone exits between the listing and the signal.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal_number)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    import tempfile

    require_postgres()
    # Not under pytest's tmp dir: the postgres user must be able to reach it.
    directory = Path(tempfile.mkdtemp(prefix="switchboard-pg-"))
    os.chmod(directory, 0o755)  # noqa: S103 - the postgres user must traverse it
    server = PrivatePostgres(directory)
    try:
        _seed(server.url())
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped by the test
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)
