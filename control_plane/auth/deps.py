"""Who is calling: bearer tokens for the API, the session cookie for pages, and the scope a
route needs. Routes declare these; services get the Principal."""

import time
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlmodel import Session

from control_plane.auth import service as auth_service
from control_plane.auth.bearer import bearer_token
from control_plane.auth.cache import TokenCache
from control_plane.auth.models import User
from control_plane.auth.principal import Principal
from control_plane.deps import SessionDep, SettingsDep, get_session
from control_plane.errors import ForbiddenError, UnauthorizedError


def get_token_cache(request: Request) -> TokenCache:
    cache: TokenCache = request.app.state.token_cache
    return cache


TokenCacheDep = Annotated[TokenCache, Depends(get_token_cache)]


def authenticate(cache: TokenCache, session: Session, token: str) -> Principal:
    """Verify a token: from the cache when recently verified, else from the database.

    While the database is unreachable, a token verified in the last minutes still passes, so
    read-only hot paths (session configs) keep answering from their last known good state.
    """
    token_hash = auth_service.hash_token(token)
    principal = cache.fresh(token_hash)
    if principal is not None and not cache.claim_reverification(token_hash):
        return principal
    try:
        principal = auth_service.verify_and_keep(session, cache, token)
    except (OperationalError, PoolTimeoutError):
        principal = cache.last_known(token_hash)
        if principal is None:
            raise
        return principal
    if principal is None:
        raise UnauthorizedError("The token is not valid or was revoked.", code="invalid_token")
    return principal


def get_optional_principal(
    request: Request, session: SessionDep, cache: TokenCacheDep
) -> Principal | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    token = bearer_token(header)
    if token is None:
        raise UnauthorizedError(
            "Use 'Authorization: Bearer <token>'.", code="invalid_authorization_header"
        )
    return authenticate(cache, session, token)


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


# --- people on the pages ----------------------------------------------------------------------


class SignInRequired(Exception):
    """A page needs a signed-in person; the web layer answers with a redirect to /login."""


def current_user(
    request: Request, settings: SettingsDep, session: Annotated[Session, Depends(get_session)]
) -> User:
    """The signed-in user, if the cookie's session is still alive: issued for the user's current
    session version (not signed out since, password unchanged), within the absolute lifetime,
    and used within the idle lifetime."""
    cookie = request.session
    user_id = cookie.get("user_id")
    user = session.get(User, user_id) if isinstance(user_id, int) else None
    now = int(time.time())
    if (
        user is None
        or cookie.get("sv") != user.session_version
        or now - int(cookie.get("iat", 0)) > settings.session_absolute_hours * 3600
        or now - int(cookie.get("seen", 0)) > settings.session_idle_minutes * 60
    ):
        cookie.clear()
        raise SignInRequired
    if now - int(cookie["seen"]) >= 60:  # a fresh cookie at most once a minute
        cookie["seen"] = now
    return user


UserDep = Annotated[User, Depends(current_user)]


def user_principal(user: UserDep) -> Principal:
    """The signed-in person as the services see every caller."""
    return auth_service.principal_for_user(user)


UserPrincipalDep = Annotated[Principal, Depends(user_principal)]


def require_admin_user(user: UserDep) -> User:
    if user.role != "admin":
        raise ForbiddenError("This page is for product admins.", code="admin_required")
    return user


AdminUserDep = Annotated[User, Depends(require_admin_user)]
