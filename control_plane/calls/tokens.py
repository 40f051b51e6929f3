"""Stream tokens: short-lived, single-use proof that the control plane issued a call.

A token is `st1.<payload>.<mac>`: the payload (base64url JSON) names the call, its workspace and
agent and when the token expires; the mac is HMAC-SHA256 over the payload with the server's
stream-token key. Single use is the call's state, not the token's: a call is claimed once.
"""

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

from switchboard_runtime.contract import (
    STREAM_TOKEN_PREFIX,
    StreamTokenPayload,
    decode_stream_token_payload,
    encode_stream_token_payload,
    split_stream_token,
)


class StreamTokenError(Exception):
    """The token is not one this server signed, or it has expired. `code` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class StreamGrant:
    call_id: str
    workspace_id: str
    agent_id: str
    expires_at: datetime


def _mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign(key: bytes, grant: StreamGrant) -> str:
    payload = encode_stream_token_payload(
        StreamTokenPayload(
            call_id=grant.call_id,
            workspace_id=grant.workspace_id,
            agent_id=grant.agent_id,
            expires_at=int(grant.expires_at.timestamp()),
        )
    )
    return f"{STREAM_TOKEN_PREFIX}.{payload}.{_mac(key, payload)}"


def verify(key: bytes, token: str, now: datetime) -> StreamGrant:
    """The grant a token carries, if this server signed it and it has not expired."""
    parts = split_stream_token(token)
    if parts is None:
        raise StreamTokenError("stream_token_invalid", "malformed stream token")
    payload, mac = parts
    if not signature_ok(key, payload, mac):
        raise StreamTokenError("stream_token_invalid", "stream token signature does not match")
    body = decode_stream_token_payload(payload)
    if body is None:
        raise StreamTokenError("stream_token_invalid", "stream token payload unreadable")
    grant = StreamGrant(
        call_id=body.call_id,
        workspace_id=body.workspace_id,
        agent_id=body.agent_id,
        expires_at=datetime.fromtimestamp(body.expires_at, UTC),
    )
    if not_expired(grant, now):
        return grant
    raise StreamTokenError("stream_token_expired", "stream token expired")


def signature_ok(key: bytes, payload: str, mac: str) -> bool:
    try:
        return hmac.compare_digest(_mac(key, payload), mac)
    except (TypeError, UnicodeEncodeError):
        return False


def not_expired(grant: StreamGrant, now: datetime) -> bool:
    return now < grant.expires_at
