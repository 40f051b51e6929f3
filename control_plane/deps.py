"""FastAPI dependencies: settings, database session, the caller and what the caller may do."""

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlmodel import Session

from control_plane.auth import service as auth_service
from control_plane.auth.cache import TokenCache
from control_plane.auth.principal import Principal
from control_plane.changes import attach
from control_plane.db import end_read_only, has_work_to_commit
from control_plane.errors import ForbiddenError, UnauthorizedError
from control_plane.rollout.gate import FlagGate
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
SerializedCallWrites = Depends(serialize_call_writes, scope="function")
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError(
            "Use 'Authorization: Bearer <token>'.", code="invalid_authorization_header"
        )
    return token.strip()


def authenticate(request: Request, session: Session, token: str) -> Principal:
    """Verify a token: from the cache when recently verified, else from the database.

    While the database is unreachable, a token verified in the last minutes still passes, so
    read-only hot paths (session configs) keep answering from their last known good state.
    """
    cache: TokenCache = request.app.state.token_cache
    token_hash = auth_service.hash_token(token)
    principal = cache.fresh(token_hash)
    if principal is not None:
        return principal
    try:
        principal = auth_service.principal_for_token(session, token)
    except (OperationalError, PoolTimeoutError):
        principal = cache.last_known(token_hash)
        if principal is None:
            raise
        return principal
    if principal is None:
        raise UnauthorizedError("The token is not valid or was revoked.", code="invalid_token")
    cache.put(token_hash, principal)
    return principal


def get_optional_principal(request: Request, session: SessionDep) -> Principal | None:
    token = _bearer_token(request)
    if token is not None:
        return authenticate(request, session, token)
    return None


OptionalPrincipalDep = Annotated[Principal | None, Depends(get_optional_principal)]


def get_principal(principal: OptionalPrincipalDep) -> Principal:
    if principal is None:
        raise UnauthorizedError(
            "Authentication required: send a bearer token.", code="unauthorized"
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise ForbiddenError("This action needs the admin scope.", code="admin_required")
    return principal


def require_service(principal: PrincipalDep) -> Principal:
    if not principal.is_service:
        raise ForbiddenError("This action needs the service scope.", code="service_required")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]
ServiceDep = Annotated[Principal, Depends(require_service)]


def get_flag_gate(request: Request) -> FlagGate:
    gate: FlagGate = request.app.state.flag_gate
    return gate


GateDep = Annotated[FlagGate, Depends(get_flag_gate)]
