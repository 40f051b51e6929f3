"""Stream tokens: short-lived, single-use proof that the control plane issued a call.

A token is `st1.<payload>.<mac>`: the payload (base64url JSON) names the call, its workspace and
agent and when the token expires; the mac is HMAC-SHA256 over the payload with the server's
stream-token key. Single use is the call's state, not the token's: a call is claimed once.
"""

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime

PREFIX = "st1"


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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())


def sign(key: bytes, grant: StreamGrant) -> str:
    body = {
        "c": grant.call_id,
        "w": grant.workspace_id,
        "a": grant.agent_id,
        "x": int(grant.expires_at.timestamp()),
    }
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{PREFIX}.{payload}.{_mac(key, payload)}"


def verify(key: bytes, token: str, now: datetime) -> StreamGrant:
    """The grant a token carries, if this server signed it and it has not expired."""
    prefix, _, rest = token.partition(".")
    payload, _, mac = rest.partition(".")
    if prefix != PREFIX or not payload or not mac:
        raise StreamTokenError("stream_token_invalid", "malformed stream token")
    if not signature_ok(key, payload, mac):
        raise StreamTokenError("stream_token_invalid", "stream token signature does not match")
    try:
        body = json.loads(_unb64(payload))
        grant = StreamGrant(
            call_id=str(body["c"]),
            workspace_id=str(body["w"]),
            agent_id=str(body["a"]),
            expires_at=datetime.fromtimestamp(int(body["x"]), UTC),
        )
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise StreamTokenError("stream_token_invalid", "stream token payload unreadable") from exc
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
