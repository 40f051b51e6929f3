"""Machine tokens: issue, verify, revoke. Tokens are random and stored as SHA-256 hashes."""

import hashlib
import logging
import secrets

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from control_plane.auth.cache import TokenCache
from control_plane.auth.models import ApiToken, User, validate_scope
from control_plane.auth.passwords import Passwords
from control_plane.auth.principal import Principal
from control_plane.changes import notify
from control_plane.core import utcnow
from control_plane.errors import ConflictError, InvalidInputError, NotFoundError
from control_plane.pagination import MAX_LIMIT, page

logger = logging.getLogger(__name__)

TOKENS_TOPIC = "tokens"
TOKEN_PREFIX = "sbt_"  # noqa: S105 - a public marker, not a secret


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: no dictionary to attack.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(session: Session, *, name: str, scopes: list[str]) -> tuple[ApiToken, str]:
    """Create a token; the plain token is returned once and never stored."""
    scopes = [validate_scope(s) for s in scopes]
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=hash_token(token), token_prefix=token[:10], scopes=scopes)
    session.add(row)
    session.flush()
    return row, token


def principal_for_token(session: Session, token: str) -> Principal | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    return Principal(name=row.name, scopes=frozenset(row.scopes), token_id=row.id)


def verify_and_keep(session: Session, cache: TokenCache, token: str) -> Principal | None:
    """Look a token up and record the answer in `cache`: kept if it verifies, dropped if not."""
    token_hash = hash_token(token)
    looked_up_at = cache.clock()
    principal = principal_for_token(session, token)
    if principal is None:
        cache.forget(token_hash)
    else:
        cache.put(token_hash, principal, looked_up_at)
    return principal


def reverify_cached_token(engine: Engine, cache: TokenCache, token: str) -> None:
    """Look a kept token up again ahead of its window's end, off the request path (a worker
    thread). A database error leaves the entry as it is: its window still ends on time."""
    try:
        with Session(engine) as session:
            verify_and_keep(session, cache, token)
    except SQLAlchemyError as error:
        logger.warning("re-verifying a token failed (%s); it expires on time", type(error).__name__)


def list_tokens(
    session: Session, limit: int = MAX_LIMIT, cursor: str | None = None
) -> tuple[list[ApiToken], str | None]:
    return page(session, select(ApiToken), [col(ApiToken.id)], [int], limit, cursor)


def revoke_token(session: Session, token_id: int) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(f"Token {token_id} not found.", code="token_not_found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        notify(session, TOKENS_TOPIC)
    return row


def revoke_tokens_named(session: Session, name: str) -> int:
    rows = session.exec(
        select(ApiToken).where(ApiToken.name == name, col(ApiToken.revoked_at).is_(None))
    )
    count = 0
    for row in rows:
        row.revoked_at = utcnow()
        session.add(row)
        count += 1
    if count:
        notify(session, TOKENS_TOPIC)
    return count


# --- people -------------------------------------------------------------------------------

ROLES = ("admin", "member")


def create_user(
    session: Session,
    passwords: Passwords,
    *,
    email: str,
    password: str,
    role: str,
    workspace_id: str | None = None,
) -> User:
    email = email.strip().lower()
    if "@" not in email or len(email) > 254:
        raise InvalidInputError("Give an email address.", code="invalid_email")
    if len(password) < 10:
        raise InvalidInputError("Passwords need at least 10 characters.", code="weak_password")
    if role not in ROLES:
        raise InvalidInputError("Role is admin or member.", code="invalid_role")
    if role == "member" and not workspace_id:
        raise InvalidInputError("A member belongs to a workspace.", code="invalid_role")
    if session.exec(select(User).where(User.email == email)).first() is not None:
        raise ConflictError(f"A user with email {email} exists.", code="user_exists")
    user = User(
        email=email,
        password_hash=passwords.hash(password),
        role=role,
        workspace_id=workspace_id if role == "member" else None,
    )
    session.add(user)
    session.flush()
    return user


def authenticate_user(
    session: Session, passwords: Passwords, email: str, password: str
) -> User | None:
    """The user when the password matches; None otherwise (in about the same time either way)."""
    user = session.exec(select(User).where(User.email == email.strip().lower())).first()
    if not passwords.matches(user.password_hash if user else None, password):
        return None
    return user


def set_password(session: Session, passwords: Passwords, email: str, password: str) -> User:
    """A new password; every session signed in with the old one ends."""
    user = session.exec(select(User).where(User.email == email.strip().lower())).first()
    if user is None:
        raise NotFoundError(f"No user with email {email}.", code="user_not_found")
    if len(password) < 10:
        raise InvalidInputError("Passwords need at least 10 characters.", code="weak_password")
    user.password_hash = passwords.hash(password)
    end_sessions(session, user)
    return user


def end_sessions(session: Session, user: User) -> None:
    """Revoke every session cookie issued to this user so far (sign-out, password change)."""
    user.session_version += 1
    session.add(user)
    session.flush()


def principal_for_user(user: User) -> Principal:
    scopes = {"admin"} if user.role == "admin" else {f"workspace:{user.workspace_id}"}
    return Principal(name=user.email, scopes=frozenset(scopes), user_id=user.id)
