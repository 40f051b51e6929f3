"""Every CLI command the docs show, run as a user runs it: `switchboard …` in a fresh process,
on SQLite and on PostgreSQL. In-process tests hide import-order bugs (a command that never
loads some table's metadata); these do not. The console script itself starts the first command
of a run and the servers; the others are forked from a process that has imported only what the
console script imports (`cli_forks.py`), which saves ~3 s of imports per command."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PostgresDatabases
from tests.fakes.server import free_port
from tests.integration.cli_forks import CommandForks

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


class Switchboard:
    """`switchboard ARGS` in a fresh process: forked (default) or by the console script."""

    def __init__(self, forks: CommandForks) -> None:
        self._forks = forks

    def _run(
        self, env: dict[str, str], args: tuple[str, ...], console_script: bool
    ) -> subprocess.CompletedProcess[str]:
        if console_script:
            return subprocess.run(
                [SWITCHBOARD, *args], env=env, capture_output=True, text=True, timeout=120
            )
        return self._forks.run(list(args), env)

    def run(self, env: dict[str, str], *args: str, console_script: bool = False) -> str:
        done = self._run(env, args, console_script)
        assert done.returncode == 0, f"switchboard {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def refused(self, env: dict[str, str], *args: str, console_script: bool = False) -> str:
        done = self._run(env, args, console_script)
        assert done.returncode == 2, f"switchboard {' '.join(args)} was not refused:\n{done.stdout}"
        return done.stderr


@pytest.fixture(scope="module")
def switchboard() -> Iterator[Switchboard]:
    forks = CommandForks()
    yield Switchboard(forks)
    forks.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def cli_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment for the CLI with an empty database (nothing migrated yet)."""
    env = {
        **os.environ,
        "SWITCHBOARD_ENVIRONMENT": "development",
        "SWITCHBOARD_MASTER_KEY_FILE": str(tmp_path / "master.key"),
    }
    if request.param == "sqlite":
        env["SWITCHBOARD_DATABASE_URL"] = f"sqlite:///{tmp_path}/cli.db"
        yield env
        return
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    name = databases.create(empty=True)
    env["SWITCHBOARD_DATABASE_URL"] = databases.url_for(name)
    yield env
    databases.drop(name)


def test_every_documented_command_runs_in_a_fresh_process(
    switchboard: Switchboard, cli_env: dict[str, str], tmp_path: Path
) -> None:
    assert "database migrated to head" in switchboard.run(cli_env, "migrate", console_script=True)
    assert "tiers" in switchboard.run(cli_env, "seed")
    demo = switchboard.run(cli_env, "seed", "--demo")
    assert "demo-admin" in demo and "demo-service" in demo

    created = switchboard.run(
        cli_env,
        *("users", "create", "bob@acme.example", "--role", "member", "--workspace", "acme"),
        *("--password", "correct horse battery staple"),
    )
    assert "bob@acme.example (member, acme)" in created
    assert "admin@example.com" not in created

    token = switchboard.run(
        cli_env, "tokens", "create", "--scope", "service", "--name", "calls"
    ).splitlines()[-1]
    assert token.startswith("sbt_")
    listed = switchboard.run(cli_env, "tokens", "list")
    assert "calls" in listed and token not in listed  # shown once, stored hashed
    token_id = next(line.split()[0] for line in listed.splitlines() if "calls" in line)
    switchboard.run(cli_env, "tokens", "revoke", token_id)
    # What the CLI refuses it says in one line, never with a traceback.
    password = ("--password", "correct horse battery staple")
    for args in (
        ("tokens", "revoke", "999999"),
        (
            "users",
            "create",
            "bob@acme.example",
            "--role",
            "member",
            "--workspace",
            "acme",
            *password,
        ),
        ("users", "set-password", "nobody@acme.example", *password),
    ):
        said = switchboard.refused(cli_env, *args)
        assert said.startswith("error (") and "Traceback" not in said, said

    assert "globex" in switchboard.run(cli_env, "cohorts", "set", "beta-1", "globex")
    assert "beta-1" in switchboard.run(cli_env, "cohorts", "list")
    assert "grok-realtime-tier" in switchboard.run(cli_env, "flags", "list")
    switchboard.run(cli_env, "flags", "stage", "grok-realtime-tier", "beta")
    switchboard.run(cli_env, "flags", "kill", "grok-realtime-tier", "--reason", "latency spike")
    assert "killed" in switchboard.run(cli_env, "flags", "show", "grok-realtime-tier").lower()
    switchboard.run(cli_env, "flags", "resume", "grok-realtime-tier")
    exported = switchboard.run(cli_env, "flags", "export")
    flags_file = tmp_path / "flags.json"
    flags_file.write_text(exported)
    assert json.loads(exported)
    switchboard.run(cli_env, "flags", "import", str(flags_file))

    plan_file = tmp_path / "plan.json"
    plan_file.write_text(
        json.dumps(
            {
                "milestones": [
                    {"name": "beta 10 %", "stage": "beta", "beta_percentage": 10},
                    {"name": "GA", "stage": "ga", "min_dwell_hours": 0},
                ]
            }
        )
    )
    assert "current beta 10 %" in switchboard.run(
        cli_env, "flags", "plan", "set", "grok-realtime-tier", str(plan_file)
    )
    assert "waiting" in switchboard.run(cli_env, "flags", "plan", "show", "grok-realtime-tier")
    checked = switchboard.run(cli_env, "flags", "plan", "check", "grok-realtime-tier")
    assert "waiting\tbeta 10 %\t" in checked and "dwell" in checked
    assert "transcripts deleted: 0" in switchboard.run(cli_env, "transcripts", "purge")

    entry = switchboard.run(cli_env, "keys", "generate-master").strip().splitlines()[-1]
    assert entry.startswith("k1:")
    assert "re-encrypted" in switchboard.run(cli_env, "keys", "rotate-master", "--new-key-id", "k2")


def wait_for(url: str, process: subprocess.Popen[bytes]) -> int:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            return httpx.get(url, timeout=1).status_code
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


@pytest.mark.parametrize("http_server", ["uvicorn", "granian"])
def test_serve_and_worker_come_up(
    switchboard: Switchboard, cli_env: dict[str, str], http_server: str
) -> None:
    switchboard.run(cli_env, "migrate")
    demo = switchboard.run(cli_env, "seed", "--demo")
    service = next(line.split()[-1] for line in demo.splitlines() if "demo-service" in line)
    port, worker_port = free_port(), free_port()
    server = subprocess.Popen(
        [SWITCHBOARD, "serve", "--port", str(port), "--server", http_server], env=cli_env
    )
    worker = subprocess.Popen(
        [
            *(SWITCHBOARD, "worker", "--port", str(worker_port), "--server", http_server),
            *("--media-port", "0"),
        ],
        env={
            **cli_env,
            "SWITCHBOARD_SERVICE_TOKEN": service,
            "SWITCHBOARD_CONTROL_PLANE_URL": f"http://127.0.0.1:{port}",
        },
    )
    try:
        assert wait_for(f"http://127.0.0.1:{port}/readyz", server) == 200
        assert wait_for(f"http://127.0.0.1:{worker_port}/healthz", worker) == 200
    finally:
        for process in (server, worker):
            process.terminate()
            assert process.wait(timeout=15) is not None


@pytest.fixture
def production_env(switchboard: Switchboard, tmp_path: Path) -> dict[str, str]:
    """Production with a proper session secret and master key, on a migrated SQLite file."""
    from control_plane.keys.crypto import create_key_file

    create_key_file(tmp_path / "prod.key", "prod-1")
    env = {
        **os.environ,
        "SWITCHBOARD_ENVIRONMENT": "production",
        "SWITCHBOARD_PASSWORD_HASH_COST": "standard",  # the suite runs with cheapest
        "SWITCHBOARD_DATABASE_URL": f"sqlite:///{tmp_path}/prod.db",
        "SWITCHBOARD_MASTER_KEY_FILE": str(tmp_path / "prod.key"),
        "SWITCHBOARD_SESSION_SECRET": "s" * 48,
    }
    switchboard.run(env, "migrate")
    return env


def test_production_refuses_demo_data(
    switchboard: Switchboard, production_env: dict[str, str]
) -> None:
    message = switchboard.refused(production_env, "seed", "--demo", console_script=True)
    assert "refused in production" in message and len(message.strip().splitlines()) == 1
    assert "tiers" in switchboard.run(production_env, "seed")  # the catalogue itself is fine


def test_production_refuses_a_short_session_secret(
    switchboard: Switchboard, production_env: dict[str, str]
) -> None:
    message = switchboard.refused({**production_env, "SWITCHBOARD_SESSION_SECRET": "x"}, "serve")
    assert "SWITCHBOARD_SESSION_SECRET is 1 bytes" in message
    assert len(message.strip().splitlines()) == 1


def test_production_refuses_a_development_key_file(
    switchboard: Switchboard, production_env: dict[str, str], tmp_path: Path
) -> None:
    from control_plane.keys.crypto import create_key_file

    create_key_file(tmp_path / "dev.key", "dev-abc123")
    message = switchboard.refused(
        {**production_env, "SWITCHBOARD_MASTER_KEY_FILE": str(tmp_path / "dev.key")}, "serve"
    )
    assert "development key" in message and len(message.strip().splitlines()) == 1


def test_a_weak_session_secret_lets_anyone_forge_an_admin_cookie_without_the_refusal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Why the refusal exists: with the check off, production starts on secret 'x', and a cookie
    signed with 'x' by someone who guessed it opens the admin pages."""
    import base64

    import itsdangerous
    from fastapi.testclient import TestClient

    from control_plane import app as app_module
    from control_plane.keys.crypto import create_key_file
    from control_plane.migrate import upgrade
    from control_plane.settings import Settings

    create_key_file(tmp_path / "prod.key", "prod-1")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="production",
        password_hash_cost="standard",  # the suite runs with cheapest (tests/conftest.py)
        database_url=f"sqlite:///{tmp_path}/weak.db",
        master_key_file=tmp_path / "prod.key",
        session_secret="x",
    )
    upgrade(settings.database_url)
    with pytest.raises(RuntimeError, match="SESSION_SECRET"):
        app_module.create_app(settings)
    monkeypatch.setattr(app_module, "production_refusals", lambda settings: [])
    application = app_module.create_app(settings)
    from sqlmodel import Session

    from control_plane.auth import service as auth_service

    with Session(application.state.engine) as session:
        admin = auth_service.create_user(
            session,
            application.state.passwords,
            email="root@example.com",
            password="long enough pw 123",
            role="admin",
        )
        session.commit()
        admin_id = admin.id
    now = int(__import__("time").time())
    claims = {"user_id": admin_id, "sv": 0, "iat": now, "seen": now}  # the cookie's known shape
    payload = base64.b64encode(json.dumps(claims).encode())
    forged = itsdangerous.TimestampSigner("x").sign(payload).decode()
    with TestClient(application, base_url="https://testserver") as client:
        client.cookies.set("switchboard_session", forged)
        page = client.get("/rollout", follow_redirects=False)
    assert page.status_code == 200 and "Rollout" in page.text


@pytest.mark.parametrize(
    ("command", "setting", "value"),
    [
        ("serve", "SWITCHBOARD_MAX_TOOLS_PER_AGENT", "99"),
        ("migrate", "SWITCHBOARD_DATABASE_POOL_SIZE", "many"),
        ("worker", "SWITCHBOARD_WORKER_MAX_CALLS", "0"),
        ("worker", "SWITCHBOARD_WORKER_DRAIN_SECONDS", "-1"),
    ],
)
def test_an_invalid_setting_is_refused_in_one_line_that_names_it(
    switchboard: Switchboard, tmp_path: Path, command: str, setting: str, value: str
) -> None:
    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": f"sqlite:///{tmp_path}/settings.db",
        "SWITCHBOARD_SERVICE_TOKEN": "sbt_worker",
        setting: value,
    }
    message = switchboard.refused(env, command)
    assert message.startswith("error") and f"{setting}: " in message
    assert "Traceback" not in message and len(message.strip().splitlines()) == 1
