"""FastAPI dependencies every domain uses: settings, the database engine and a session per
request. Who the caller is lives in auth/deps.py, the flag gate in rollout/deps.py."""

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlmodel import Session

from control_plane.changes import attach
from control_plane.db import READS_ONLY, end_read_only, has_work_to_commit
from control_plane.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_session(
    request: Request, engine: Annotated[Engine, Depends(get_engine)]
) -> Iterator[Session]:
    """One session per request; commits when the handler returns without error.

    A request that wrote nothing is not committed: closing the session ends its read-only
    transaction, and a database that went away after the answer was built cannot turn a good
    answer (a session config, say) into a 503.
    """
    with attach(Session(engine, expire_on_commit=False), request.app.state.change_feed) as session:
        try:
            yield session
            if has_work_to_commit(session):
                session.commit()
            else:
                end_read_only(session)
        except BaseException:
            session.rollback()
            raise


def get_read_session(request: Request) -> Iterator[Session]:
    """A session for a route that only reads and sits on a hot path (session-config after an
    edit): no transaction, so its reads cost their own round trips and nothing around them.
    Each statement reads the latest committed rows; a write through it raises."""
    with Session(request.app.state.read_engine, expire_on_commit=False) as session:
        session.info[READS_ONLY] = True
        yield session


async def serialize_call_writes(request: Request) -> AsyncIterator[None]:
    """For the writes every call makes (issue, claim, lease, report), declared on the route so
    it runs before the request's session opens and ends after it commits.

    On SQLite, one such request at a time in this process, queued on an asyncio lock: concurrent
    writers would otherwise wait in SQLite's busy handler, which sleeps up to 100 ms between
    retries and turns a burst of call starts into timeouts. Waiting happens on the event loop,
    never in a worker thread, so waiters cannot starve the holder of the thread it needs. On
    PostgreSQL it is a no-op.
    """
    async with request.app.state.write_gate:
        yield


# scope="function": commit (and announce changes) before the response is sent, so a client
# that got 200 can read its own write and no acknowledged write is lost.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]
SerializedCallWrites = Depends(serialize_call_writes, scope="function")
SettingsDep = Annotated[Settings, Depends(get_settings)]
