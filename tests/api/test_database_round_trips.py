"""What a request costs the database beyond its own queries: no transaction around the reads of
a cold session-config, no ping for a connection back in the pool moments ago, and a ping (and a
fresh connection) for one that sat idle while the server dropped it."""

import re
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, event, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, select

from control_plane import db
from control_plane.deps import get_read_session
from control_plane.settings import Settings
from control_plane.workspaces.models import Workspace
from tests.api.test_session_config import grok_ready, make_agent, session_config  # noqa: F401
from tests.conftest import PostgresDatabases, Tokens

ON_POSTGRESQL = [pytest.param("postgresql", marks=pytest.mark.postgres)]


def cold_read(client: TestClient, tokens: Tokens) -> list[tuple[str, str]]:
    """A session-config nothing has kept yet (its token is known): for each statement it ran,
    the table it read and the PostgreSQL session's transaction state right after it."""
    first, second = make_agent(client, tokens), make_agent(client, tokens, name="Bo")
    assert session_config(client, tokens, first).status_code == 200
    seen: list[tuple[str, str]] = []

    @event.listens_for(client.app.state.engine, "after_cursor_execute")  # type: ignore[attr-defined]
    def _after(connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        status = connection.connection.dbapi_connection.info.transaction_status
        table = re.search(r"\bFROM (\w+)", statement)
        seen.append((table[1] if table else statement[:40], status.name))

    assert session_config(client, tokens, second).status_code == 200
    return seen


@pytest.mark.parametrize("database_url", ON_POSTGRESQL, indirect=True)
def test_a_cold_session_config_reads_outside_a_transaction(
    client: TestClient,
    tokens: Tokens,
    grok_ready: None,  # noqa: F811
) -> None:
    statements = cold_read(client, tokens)
    assert "agents" in {table for table, _ in statements}  # the key is kept for the workspace
    # IDLE after each: no BEGIN went before the reads, so no ROLLBACK goes after them.
    assert {state for _, state in statements} == {"IDLE"}, statements


@pytest.mark.parametrize("database_url", ON_POSTGRESQL, indirect=True)
def test_with_an_ordinary_session_the_same_reads_run_in_a_transaction(
    client: TestClient,
    tokens: Tokens,
    grok_ready: None,  # noqa: F811
) -> None:
    """The twin: the check above sees a transaction when there is one."""
    client.app.state.read_engine = client.app.state.engine  # type: ignore[attr-defined]
    statements = cold_read(client, tokens)
    assert {state for _, state in statements} == {"INTRANS"}, statements


class AppStub:
    def __init__(self, read_engine: Engine) -> None:
        self.state = type("State", (), {"read_engine": read_engine})()


def read_session(engine: Engine) -> Iterator[Session]:
    request = type("Request", (), {"app": AppStub(db.read_only(engine))})()
    return get_read_session(request)  # type: ignore[arg-type]


def test_a_write_through_the_read_session_is_refused(client: TestClient) -> None:
    engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
    with Session(engine) as setup:
        setup.add(Workspace(id="standing", name="Standing"))
        setup.commit()
    sessions = read_session(engine)
    session = next(sessions)
    session.add(Workspace(id="written-outside", name="No"))
    with pytest.raises(db.WriteInReadSessionError):
        session.flush()
    session.rollback()
    with pytest.raises(db.WriteInReadSessionError):
        session.execute(delete(Workspace))
    sessions.close()
    with Session(engine) as check:
        assert check.get(Workspace, "written-outside") is None
        assert check.get(Workspace, "standing") is not None  # nothing was deleted


def test_without_the_refusal_a_write_lands_with_no_commit(client: TestClient) -> None:
    """The twin: outside a transaction a write is kept at once, whatever the request does next
    (no commit, an error, a rollback): not the atomic request a write route promises."""
    engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
    sessions = read_session(engine)
    session = next(sessions)
    session.info.pop(db.READS_ONLY)
    session.add(Workspace(id="written-outside", name="Kept"))
    session.flush()
    session.rollback()
    sessions.close()
    with Session(engine) as check:
        assert check.get(Workspace, "written-outside") is not None


def in_transactional_mode(dbapi_connection: Any) -> bool:
    if isinstance(dbapi_connection, psycopg.Connection):
        return not dbapi_connection.autocommit
    return dbapi_connection.isolation_level is not None  # sqlite3: None is autocommit


def lent_after_a_read_session(settings: Settings) -> tuple[bool, bool]:
    """(the same connection came back, it is in transactional mode again) for the ordinary
    session that borrows the one pooled connection after a read session used it."""
    engine = db.make_engine(settings.model_copy(update={"database_pool_size": 1}))
    try:
        sessions = read_session(engine)
        reading = next(sessions)
        reading.execute(select(Workspace).limit(1))
        read_with = reading.connection().connection.dbapi_connection
        sessions.close()
        with Session(engine) as writing:
            writing.execute(text("SELECT 1"))
            lent = writing.connection().connection.dbapi_connection
            return lent is read_with, in_transactional_mode(lent)
    finally:
        engine.dispose()


def test_a_connection_leaves_the_read_session_transactional_again(settings: Settings) -> None:
    """Otherwise the next request's writes on it would each commit alone."""
    assert lent_after_a_read_session(settings) == (True, True)


def test_without_the_reset_the_next_session_writes_without_a_transaction(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.engine import default

    monkeypatch.setattr(default.DefaultDialect, "reset_isolation_level", lambda *_: None)
    assert lent_after_a_read_session(settings) == (True, False)


# -- pings ----------------------------------------------------------------------------------------


@pytest.fixture
def pg_engine(
    postgres_databases: PostgresDatabases, request: pytest.FixtureRequest
) -> Iterator[Engine]:
    name = postgres_databases.create()
    idle_seconds = getattr(request, "param", 0.2)
    engine = db.make_engine(
        Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=postgres_databases.url_for(name),
            database_ping_idle_seconds=idle_seconds,
        )
    )
    yield engine
    engine.dispose()
    postgres_databases.drop(name)


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def count_pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    real = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(1)
        return real(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


def terminate(postgres_databases: PostgresDatabases, pid: int) -> None:
    with postgres_databases.admin.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


@pytest.mark.postgres
def test_a_connection_back_moments_ago_is_lent_without_a_ping(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = count_pings(pg_engine, monkeypatch)
    pids = {backend_pid(pg_engine) for _ in range(20)}
    assert len(pids) == 1 and pings == []  # one connection, reused, never pinged
    time.sleep(0.3)  # past the 0.2 s the fixture allows
    assert backend_pid(pg_engine) in pids
    assert pings == [1]


@pytest.mark.postgres
def test_an_idle_connection_the_server_dropped_is_replaced_unseen(
    pg_engine: Engine, postgres_databases: PostgresDatabases
) -> None:
    dropped = backend_pid(pg_engine)
    terminate(postgres_databases, dropped)
    time.sleep(0.3)
    assert backend_pid(pg_engine) != dropped  # the ping failed, a fresh connection answered


@pytest.mark.postgres
@pytest.mark.parametrize("pg_engine", [3600.0], indirect=True)
def test_without_the_ping_the_dropped_connection_fails_the_request(
    pg_engine: Engine, postgres_databases: PostgresDatabases
) -> None:
    """The twin: never pinged, the dropped connection is lent and the request fails."""
    dropped = backend_pid(pg_engine)
    terminate(postgres_databases, dropped)
    time.sleep(0.3)
    with pytest.raises(DBAPIError) as failed:
        backend_pid(pg_engine)
    assert isinstance(failed.value.orig, psycopg.OperationalError)
    assert backend_pid(pg_engine) != dropped  # and the pool then starts afresh
