"""Webhook signatures and stream tokens, checked against independent implementations: Twilio's
own `RequestValidator` (the helper library) and Ed25519 keys made by `cryptography`."""

import base64
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twilio.request_validator import RequestValidator

from control_plane.calls import tokens, webhooks

AUTH_TOKEN = "12345678901234567890123456789012"
PARAMS = {"CallSid": "CA1", "From": "+15550100", "To": "+15550199", "Digits": "", "Caller": "ü"}


@pytest.mark.parametrize(
    "url",
    [
        "https://worker.example.com/twiml/agt_1?workspace_id=acme",
        "https://worker.example.com:443/twiml/agt_1?workspace_id=acme",
        "http://127.0.0.1:8001/twiml/agt_1?workspace_id=acme&x=a%20b",
    ],
)
def test_twilio_signatures_made_by_twilios_library_verify(url: str) -> None:
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, PARAMS)
    webhooks.verify_twilio(AUTH_TOKEN, url, PARAMS, signature)
    assert webhooks.twilio_signature(AUTH_TOKEN, url, PARAMS) == signature


def test_twilio_signature_with_or_without_the_default_port() -> None:
    # Twilio may sign the URL with the port spelled out; a proxy may drop it.
    signed = "https://worker.example.com:443/twiml/agt_1"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(signed, PARAMS)
    webhooks.verify_twilio(AUTH_TOKEN, "https://worker.example.com/twiml/agt_1", PARAMS, signature)
    with pytest.raises(webhooks.WebhookSignatureError):
        webhooks.verify_twilio(
            AUTH_TOKEN, "https://worker.example.com:8443/twiml/agt_1", PARAMS, signature
        )


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"token": "0" * 32}, "webhook_signature_invalid"),
        ({"params": {**PARAMS, "To": "+15550000"}}, "webhook_signature_invalid"),
        (
            {"url": "https://evil.example.com/twiml/agt_1?workspace_id=acme"},
            "webhook_signature_invalid",
        ),
        ({"signature": ""}, "webhook_signature_missing"),
    ],
)
def test_twilio_signature_refuses_changes(change: dict[str, object], code: str) -> None:
    url = "https://worker.example.com/twiml/agt_1?workspace_id=acme"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, PARAMS)
    args = {"token": AUTH_TOKEN, "url": url, "params": PARAMS, "signature": signature, **change}
    with pytest.raises(webhooks.WebhookSignatureError) as refused:
        webhooks.verify_twilio(args["token"], args["url"], args["params"], args["signature"])  # type: ignore[arg-type]
    assert refused.value.code == code


def _telnyx(body: bytes, at: int, key: Ed25519PrivateKey) -> tuple[str, str]:
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    signature = key.sign(f"{at}|".encode() + body)
    return base64.b64encode(public).decode(), base64.b64encode(signature).decode()


def test_telnyx_signature_verifies_and_refuses() -> None:
    key = Ed25519PrivateKey.generate()
    body = b'{"data":{"event_type":"call.initiated"}}'
    now = int(time.time())
    public, signature = _telnyx(body, now, key)
    webhooks.verify_telnyx(public, body, str(now), signature, now + 10)
    assert webhooks.valid_ed25519_public_key(public)
    refusals = [
        (public, body + b" ", str(now), signature, now, "webhook_signature_invalid"),
        (public, body, str(now + 1), signature, now, "webhook_signature_invalid"),
        (public, body, str(now), signature, now + 301, "webhook_timestamp_stale"),
        (public, body, str(now), "", now, "webhook_signature_missing"),
        (public, body, "soon", signature, now, "webhook_signature_invalid"),
        (
            _telnyx(body, now, Ed25519PrivateKey.generate())[0],
            body,
            str(now),
            signature,
            now,
            "webhook_signature_invalid",
        ),
    ]
    for public_key, raw, at, sig, clock, code in refusals:
        with pytest.raises(webhooks.WebhookSignatureError) as refused:
            webhooks.verify_telnyx(public_key, raw, at, sig, clock)
        assert refused.value.code == code
    assert not webhooks.valid_ed25519_public_key("not a key")


def test_stream_tokens_carry_their_grant_and_refuse_tampering() -> None:
    key = b"k" * 32
    now = datetime.now(UTC)
    grant = tokens.StreamGrant(
        "call_1", "acme", "agt_1", now.replace(microsecond=0) + timedelta(seconds=60)
    )
    token = tokens.sign(key, grant)
    assert tokens.verify(key, token, now) == grant
    prefix, payload, mac = token.split(".")
    other = tokens.sign(key, tokens.StreamGrant("call_2", "acme", "agt_1", grant.expires_at))
    for bad, code in [
        (f"{prefix}.{other.split('.')[1]}.{mac}", "stream_token_invalid"),  # swapped payload
        (tokens.sign(b"x" * 32, grant), "stream_token_invalid"),  # another server's key
        (f"st0.{payload}.{mac}", "stream_token_invalid"),
        ("garbage", "stream_token_invalid"),
        (f"{prefix}.{payload}.{mac}é", "stream_token_invalid"),
    ]:
        with pytest.raises(tokens.StreamTokenError) as refused:
            tokens.verify(key, bad, now)
        assert refused.value.code == code
    with pytest.raises(tokens.StreamTokenError) as expired:
        tokens.verify(key, token, grant.expires_at)
    assert expired.value.code == "stream_token_expired"


def test_the_contract_is_defined_once() -> None:
    """The control plane serves and takes exactly the runtime's types, not copies of them."""
    from control_plane.rollout import models as rollout_models
    from control_plane.sessions import models as session_models
    from control_plane.telemetry import models as telemetry_models
    from switchboard_runtime import contract

    assert session_models.ResolvedSessionConfig is contract.ResolvedSessionConfig
    assert telemetry_models.CallReportIn is contract.CallReport
    assert rollout_models.FlagDecision is contract.FlagDecision
