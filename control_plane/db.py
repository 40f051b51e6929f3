"""Database engine and sessions: SQLite by default, PostgreSQL by URL."""

import asyncio
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import ORMExecuteState
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session, create_engine

from control_plane.settings import Settings

if TYPE_CHECKING:
    from control_plane.changes import ChangeFeed


def make_engine(settings: Settings) -> Engine:
    if settings.is_sqlite:
        engine = create_engine(
            settings.database_url,
            connect_args={"check_same_thread": False, "timeout": settings.database_timeout_seconds},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        pool_timeout=settings.database_timeout_seconds,
        connect_args={"connect_timeout": max(1, int(settings.database_timeout_seconds))},
    )
    connection_class = bounded_connection_class(settings.database_query_timeout_seconds)

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        return connection_class.connect(*cargs, **cparams)

    ping_when_idle(engine, settings.database_ping_idle_seconds)
    return engine


IDLE_SINCE = "switchboard.idle_since"


def ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Ping a pooled connection before lending it only if it sat unused for `idle_seconds`.

    SQLAlchemy's `pool_pre_ping` pings at every checkout: one more round trip for every request
    that reads the database, ahead of the reads themselves. A connection returned moments ago is
    almost surely still there (connection pools commonly skip the check within half a second of
    last use); one that sat idle may have been dropped by the server, a proxy or a firewall.
    A failed ping discards the connection and the pool lends a fresh one."""

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _lent(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.pop(IDLE_SINCE, None)
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return  # just connected, or back moments ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"connection lost while idle: {exc}") from exc


def bounded_connection_class(seconds: float) -> type[Any]:
    """A psycopg connection whose every wait on the server (query, fetch, commit, the pool's
    ping) ends after `seconds`: libpq would wait forever on a server that accepted the TCP
    connection and then stopped answering. The timed-out connection is closed, which SQLAlchemy
    sees as a disconnect and drops from the pool."""
    import psycopg
    from psycopg import errors

    class BoundedConnection(psycopg.Connection[Any]):
        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            if timeout is not None:  # psycopg's own bounded waits (notifies) keep their meaning
                return super().wait(gen, interval, timeout)
            try:
                return super().wait(gen, interval, seconds)
            except errors._WaitTimeout:
                self.pgconn.finish()
                raise psycopg.OperationalError(
                    f"the database did not answer within {seconds:g} s; connection closed"
                ) from None

    return BoundedConnection


def read_only(engine: Engine) -> Engine:
    """The engine for sessions that only read (`deps.ReadSessionDep`): its statements run outside
    a transaction, each reading the latest committed rows. On PostgreSQL that saves the BEGIN and
    the ROLLBACK, two round trips around the reads themselves. Shares the engine's pool."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def write_gate(settings: Settings) -> AbstractAsyncContextManager[object]:
    """Serializes hot-path writers in one process on SQLite (see deps.serialize_call_writes).
    Make it inside the running event loop (the app's lifespan)."""
    return asyncio.Lock() if settings.is_sqlite else nullcontext()


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@contextmanager
def session_scope(engine: Engine, feed: "ChangeFeed | None" = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error (CLI and background jobs).

    With a change feed, its changes are announced to running Switchboard processes.
    """
    with Session(engine, expire_on_commit=False) as session:
        if feed is not None:
            session.info["change_feed"] = feed
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


WROTE = "switchboard.wrote"


READS_ONLY = "switchboard.reads_only"


class WriteInReadSessionError(RuntimeError):
    """A write through a session that only reads: outside a transaction it would not be atomic."""


@event.listens_for(Session, "do_orm_execute")
def _note_write_statements(state: ORMExecuteState) -> None:
    if not state.is_select:
        if state.session.info.get(READS_ONLY):
            raise WriteInReadSessionError("this session only reads")
        state.session.info[WROTE] = True


@event.listens_for(Session, "before_flush")
def _refuse_flush_in_read_session(session: Session, _context: Any, _instances: Any) -> None:
    if session.info.get(READS_ONLY) and (session.new or session.dirty or session.deleted):
        raise WriteInReadSessionError("this session only reads")


@event.listens_for(Session, "after_flush")
def _note_flush(session: Session, _context: Any) -> None:
    session.info[WROTE] = True


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _forget_writes(session: Session) -> None:
    session.info.pop(WROTE, None)


def has_work_to_commit(session: Session) -> bool:
    """Whether this transaction changed anything (ORM statements and flushes; the Core reads on
    hot paths go through `session.connection()` and are reads only) or announced a change."""
    return bool(
        session.info.get(WROTE)
        or session.new
        or session.dirty
        or session.deleted
        or session.info.get("change_topics")
    )


def end_read_only(session: Session) -> None:
    """End a transaction that only read: its answer stands even if the connection is gone."""
    try:
        session.rollback()
    except (OperationalError, PoolTimeoutError):
        session.invalidate()
