"""Phone providers' webhook signatures, checked with the workspace's own secret.

Twilio: `X-Twilio-Signature` is base64 HMAC-SHA1, keyed by the account's auth token, of the full
URL Twilio requested followed by every POST parameter sorted by name (name then value).
Telnyx: `telnyx-signature-ed25519` is an Ed25519 signature over `{telnyx-timestamp}|{raw body}`
made with the account's key; we verify with its public key and refuse stale timestamps.
"""

import base64
import binascii
import hashlib
import hmac
import json
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TELNYX_MAX_AGE_SECONDS = 300
DEFAULT_PORTS = {"https": 443, "http": 80, "wss": 443, "ws": 80}


class WebhookSignatureError(Exception):
    """The webhook's signature does not hold. `code` is the problem code, the message the why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _url_variants(url: str) -> list[str]:
    """The URL as given, and with its default port spelled out or left out: Twilio signs
    whichever form it requested, and a proxy in front of the worker may have changed it."""
    parts = urlsplit(url)
    default = DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    variants = [url]
    if default is not None and parts.port in (None, default):
        netloc = host if parts.port else f"{host}:{default}"
        if parts.username or parts.password:
            return variants
        variants.append(urlunsplit(parts._replace(netloc=netloc)))
    return variants


def verify_twilio(auth_token: str, url: str, params: dict[str, str], signature: str) -> None:
    if not signature:
        raise WebhookSignatureError("webhook_signature_missing", "no X-Twilio-Signature")
    for candidate in _url_variants(url):
        expected = twilio_signature(auth_token, candidate, params)
        if hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            return
    raise WebhookSignatureError("webhook_signature_invalid", "X-Twilio-Signature does not match")


def verify_telnyx(
    public_key_b64: str, body: bytes, timestamp: str, signature_b64: str, now: float
) -> None:
    if not signature_b64 or not timestamp:
        raise WebhookSignatureError(
            "webhook_signature_missing", "no telnyx-signature-ed25519 or telnyx-timestamp"
        )
    try:
        sent_at = int(timestamp)
    except ValueError as exc:
        raise WebhookSignatureError(
            "webhook_signature_invalid", "telnyx-timestamp is not a number"
        ) from exc
    if abs(now - sent_at) > TELNYX_MAX_AGE_SECONDS:
        raise WebhookSignatureError(
            "webhook_timestamp_stale",
            f"telnyx-timestamp is {int(now - sent_at)} s from now (limit {TELNYX_MAX_AGE_SECONDS})",
        )
    try:
        public_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
        signature = base64.b64decode(signature_b64, validate=True)
        public_key.verify(signature, timestamp.encode("ascii") + b"|" + body)
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise WebhookSignatureError(
            "webhook_signature_invalid", "telnyx-signature-ed25519 does not match"
        ) from exc


def twilio_call_id(params: dict[str, str]) -> str | None:
    """The call a signed Twilio webhook is about: its CallSid."""
    return params.get("CallSid") or None


# Where a Telnyx webhook names its call: TeXML form fields (the call control id first, as it is
# the one id the call keeps on every leg), or a Call Control JSON event's payload.
TELNYX_FORM_CALL_IDS = ("CallControlId", "call_control_id", "CallSid")


def telnyx_call_id(body: bytes) -> str | None:
    """The call a signed Telnyx webhook is about, read from the signed body itself."""
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            event = json.loads(text)
            payload = event["data"]["payload"]
            call_id = payload.get("call_control_id") if isinstance(payload, dict) else None
        except (ValueError, KeyError, TypeError):
            return None
        return call_id if isinstance(call_id, str) and call_id else None
    fields = dict(parse_qsl(text, keep_blank_values=True))
    return next((fields[name] for name in TELNYX_FORM_CALL_IDS if fields.get(name)), None)


def valid_ed25519_public_key(value: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        return False
    return True
