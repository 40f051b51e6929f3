"""Machine tokens: issue, verify, revoke. Tokens are random and stored as SHA-256 hashes."""

import hashlib
import secrets

from sqlmodel import Session, col, select

from control_plane.auth.models import ApiToken, validate_scope
from control_plane.auth.principal import Principal
from control_plane.changes import notify
from control_plane.core import utcnow
from control_plane.errors import NotFoundError

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


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.exec(select(ApiToken).order_by(col(ApiToken.id))))


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
