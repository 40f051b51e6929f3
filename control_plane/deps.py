"""FastAPI dependencies: settings, database session, the caller and what the caller may do."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlmodel import Session

from control_plane.auth import service as auth_service
from control_plane.auth.principal import Principal
from control_plane.errors import ForbiddenError, UnauthorizedError
from control_plane.rollout.gate import FlagGate
from control_plane.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    """One session per request; commits when the handler returns without error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


SessionDep = Annotated[Session, Depends(get_session)]
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


def get_optional_principal(request: Request, session: SessionDep) -> Principal | None:
    token = _bearer_token(request)
    if token is not None:
        principal = auth_service.principal_for_token(session, token)
        if principal is None:
            raise UnauthorizedError("The token is not valid or was revoked.", code="invalid_token")
        return principal
    user_principal: Principal | None = getattr(request.state, "user_principal", None)
    return user_principal


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
