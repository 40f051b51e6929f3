"""Issued calls: the only way a call reaches xAI.

A call backend (the worker answering a phone webhook, or a backend embedding the runtime) asks
for a call; the control plane checks the webhook's signature with the workspace's own secret,
refuses the call for the same reasons a session config would be refused, holds one of the
workspace's concurrent-call slots for it and hands back a single-use stream token. The media
stream presents that token at `start`; the call is claimed once, its lease renewed while it runs,
and it ends when its telemetry report arrives or its lease lapses.
"""

import base64
import binascii
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import quote

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from control_plane.auth.models import SERVICE_SCOPE
from control_plane.auth.principal import Principal
from control_plane.calls import tokens, webhooks
from control_plane.calls.models import (
    HOLDING_STATES,
    STREAM_CHANNELS,
    BrowserCall,
    Call,
    CallIssue,
    ClaimedCall,
    IssuedCall,
    LeaseRenewed,
    TelnyxWebhook,
    TwilioWebhook,
)
from control_plane.core import new_id, utcnow
from control_plane.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    ProblemError,
)
from control_plane.keys import service as keys
from control_plane.pagination import page
from control_plane.sessions import service as sessions
from control_plane.workspaces import service as workspaces
from control_plane.workspaces.models import WorkspaceSettings
from switchboard_runtime.logging import RepeatedWarnings

logger = logging.getLogger(__name__)

# An issued call whose stream never came keeps its slot this much past its token's expiry.
ISSUED_GRACE_SECONDS = 5


@dataclass(frozen=True)
class CallPolicy:
    """What issuing and claiming calls needs beyond the database: one per process."""

    stream_token_key: bytes
    stream_token_ttl_seconds: int
    lease_seconds: int
    # Install-wide secrets for single-tenant installs, used when a workspace has none.
    twilio_auth_token: str | None = None
    telnyx_public_key: str | None = None
    # Webhooks refused for their signature: anyone can send one, so each kind is logged at
    # most once a minute.
    refusals: RepeatedWarnings = field(
        default_factory=lambda: RepeatedWarnings(logger), compare=False, repr=False
    )


class CallLimitError(ProblemError):
    status = 429
    code = "call_limit_reached"
    title = "Concurrent call limit reached"


class StreamTokenRefusedError(ProblemError):
    status = 401
    code = "stream_token_invalid"
    title = "Stream token refused"


def _require_service(principal: Principal) -> None:
    if not principal.is_service:
        raise ForbiddenError("Calls are issued to service tokens.", code="service_required")


# --- issuing ---------------------------------------------------------------------------------


def issue_call(
    session: Session,
    resolver: sessions.Resolver,
    policy: CallPolicy,
    principal: Principal,
    workspace_id: str,
    agent_id: str,
    body: CallIssue,
) -> IssuedCall:
    _require_service(principal)
    signed_call_id = check_webhook(session, resolver, policy, workspace_id, body)
    if body.claim and body.channel != "api":
        raise InvalidInputError(
            "Only channel api calls are claimed at issue; phone calls present their token.",
            code="invalid_call",
        )
    return _issue(
        session,
        resolver,
        policy,
        principal,
        workspace_id,
        agent_id,
        channel=body.channel,
        # A phone call is known by the id its provider signed, never by what the caller says.
        provider_call_id=signed_call_id if body.channel != "api" else body.provider_call_id,
        claim=body.claim,
    )


# Browser test calls are resolved with the service's view of the workspace, once the caller
# has been shown to belong to it.
TEST_CALLS = Principal(name="test-calls", scopes=frozenset({SERVICE_SCOPE}))
BROWSER_ENGINE = "grok-realtime"


def issue_browser_call(
    session: Session,
    resolver: sessions.Resolver,
    policy: CallPolicy,
    principal: Principal,
    workspace_id: str,
    agent_id: str,
) -> IssuedCall:
    """A test call from a member's browser: the same refusals and call cap as a phone call,
    for agents on grok-realtime only (nothing else runs in the browser; never a fallback)."""
    workspaces.get_agent(session, principal, workspace_id, agent_id)  # 404 for another's agent
    return _issue(session, resolver, policy, TEST_CALLS, workspace_id, agent_id, channel="browser")


def start_browser_call(
    session: Session,
    resolver: sessions.Resolver,
    policy: CallPolicy,
    principal: Principal,
    workspace_id: str,
    agent_id: str,
    browser_call_url: str | None,
) -> BrowserCall:
    """A browser test call: where to open it and its single-use token."""
    workspaces.get_agent(session, principal, workspace_id, agent_id)  # 404 for another's agent
    if not browser_call_url:
        raise ConflictError(
            "No call worker takes browser calls on this install: set "
            "SWITCHBOARD_BROWSER_CALL_URL to the worker's public URL. Nothing was started.",
            code="test_calls_unavailable",
        )
    issued = issue_browser_call(session, resolver, policy, principal, workspace_id, agent_id)
    base = (
        browser_call_url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    )
    return BrowserCall(
        call_id=issued.call_id,
        url=f"{base}/ws/realtime/{quote(agent_id, safe='')}",
        token=issued.stream_token,
        expires_at=issued.expires_at,
    )


def _issue(
    session: Session,
    resolver: sessions.Resolver,
    policy: CallPolicy,
    principal: Principal,
    workspace_id: str,
    agent_id: str,
    *,
    channel: str,
    provider_call_id: str | None = None,
    claim: bool = False,
) -> IssuedCall:
    # The same refusals as a session config (agent unknown, tier not enabled or killed, key
    # missing), before any audio flows. Credentials stay out: nothing is minted here.
    config, _ = sessions.resolve_agent(
        session, resolver, principal, workspace_id, agent_id, credentials="none"
    )
    if channel == "browser" and config.engine != BROWSER_ENGINE:
        raise ConflictError(
            f"Test calls from the browser run on {BROWSER_ENGINE}; this agent's tier runs on "
            f"{config.engine}. Nothing was started.",
            code="engine_not_supported",
        )
    now = utcnow()
    cap = _lock_call_slots(session, workspace_id, now)
    if provider_call_id is not None:
        earlier = session.exec(
            select(Call)
            .where(Call.workspace_id == workspace_id)
            .where(Call.channel == channel)
            .where(Call.provider_call_id == provider_call_id)
        ).first()
        if earlier is not None:
            return _issued_again(policy, earlier, agent_id)
    holding = holding_calls(session, workspace_id, now)
    if not may_start_another(holding, cap):
        logger.warning("call refused for workspace %s: %d of %d slots", workspace_id, holding, cap)
        raise CallLimitError(
            f"This workspace already has {holding} calls running (limit {cap}).",
            extra={"max_concurrent_calls": cap},
            headers={"Retry-After": "5"},
        )
    expires_at = now + timedelta(seconds=policy.stream_token_ttl_seconds)
    call = Call(
        id=new_id("call"),
        workspace_id=workspace_id,
        agent_id=agent_id,
        tier=config.tier.id,
        engine=config.engine,
        provider=config.provider.name,
        channel=channel,
        provider_call_id=provider_call_id,
        started_at=now,
        lease_expires_at=expires_at + timedelta(seconds=ISSUED_GRACE_SECONDS),
    )
    if claim:
        call.state, call.claimed_at = "active", now
        call.lease_expires_at = now + timedelta(seconds=policy.lease_seconds)
    session.add(call)
    session.flush()
    token = tokens.sign(
        policy.stream_token_key,
        tokens.StreamGrant(call.id, workspace_id, agent_id, expires_at),
    )
    return IssuedCall(
        call_id=call.id,
        workspace_id=workspace_id,
        agent_id=agent_id,
        stream_token=token,
        expires_at=expires_at,
        engine=config.engine,
        state="active" if claim else "issued",
        lease_seconds=policy.lease_seconds if claim else None,
    )


def _issued_again(policy: CallPolicy, earlier: Call, agent_id: str) -> IssuedCall:
    """A provider call that was issued before (the same webhook, delivered again): while its
    stream has not come, the same call and token, holding nothing more; after, refused."""
    if earlier.agent_id != agent_id:
        raise ConflictError(
            "This provider call was issued for another agent; it cannot start a second call.",
            code="provider_call_other_agent",
        )
    if earlier.state != "issued":  # claimed, ended, or lapsed (the lock marked those)
        raise ConflictError(
            f"This provider call was issued already and is {earlier.state}; a webhook "
            "delivered again starts nothing.",
            code="provider_call_used",
        )
    expires_at = earlier.lease_expires_at - timedelta(seconds=ISSUED_GRACE_SECONDS)
    token = tokens.sign(
        policy.stream_token_key,
        tokens.StreamGrant(earlier.id, earlier.workspace_id, earlier.agent_id, expires_at),
    )
    logger.info("webhook for provider call of %s delivered again: same call", earlier.id)
    return IssuedCall(
        call_id=earlier.id,
        workspace_id=earlier.workspace_id,
        agent_id=earlier.agent_id,
        stream_token=token,
        expires_at=expires_at,
        engine=earlier.engine,
        state="issued",
        replayed=True,
    )


def may_start_another(holding: int, cap: int) -> bool:
    return holding < cap


def holding_calls(session: Session, workspace_id: str, now: datetime) -> int:
    """Calls holding a slot: issued or active, with a lease that has not lapsed."""
    return session.exec(
        select(func.count())
        .select_from(Call)
        .where(Call.workspace_id == workspace_id)
        .where(col(Call.state).in_(HOLDING_STATES))
        .where(col(Call.lease_expires_at) >= now)
    ).one()


def _lock_call_slots(session: Session, workspace_id: str, now: datetime) -> int:
    """Serialize issuance per workspace and release lapsed slots; returns the workspace's cap.

    The no-op UPDATE is the transaction's first write: it takes PostgreSQL's row lock and
    SQLite's write lock, so two processes issuing at once count each other's calls.
    """
    settings = session.get(WorkspaceSettings, workspace_id)
    if settings is None:  # a workspace created before settings rows existed
        session.add(WorkspaceSettings(workspace_id=workspace_id))
        session.flush()
    session.execute(
        update(WorkspaceSettings)
        .where(col(WorkspaceSettings.workspace_id) == workspace_id)
        .values(max_concurrent_calls=WorkspaceSettings.max_concurrent_calls)
    )
    session.execute(
        update(Call)
        .where(col(Call.workspace_id) == workspace_id)
        .where(col(Call.state).in_(HOLDING_STATES))
        .where(col(Call.lease_expires_at) < now)
        .values(state="lapsed", ended_at=now, end_reason="lease_lapsed")
    )
    cap: int = session.exec(
        select(WorkspaceSettings.max_concurrent_calls).where(
            WorkspaceSettings.workspace_id == workspace_id
        )
    ).one()
    return cap


def check_webhook(
    session: Session,
    resolver: sessions.Resolver,
    policy: CallPolicy,
    workspace_id: str,
    body: CallIssue,
) -> str | None:
    """Phone calls need the provider's signed webhook, checked with the workspace's secret.
    Returns the provider's call id, read from what the provider signed."""
    if body.channel == "api":
        if body.webhook is not None:
            raise InvalidInputError(
                "A webhook goes with channel twilio or telnyx.", code="invalid_call"
            )
        return None
    webhook = body.webhook
    if webhook is None or webhook.provider != body.channel:
        raise InvalidInputError(
            f"Channel {body.channel} needs the {body.channel} webhook the call arrived on.",
            code="webhook_required",
        )
    secret = keys.reveal_key(session, resolver.keyring, workspace_id, webhook.provider)
    if secret is None:
        secret = (
            policy.twilio_auth_token if webhook.provider == "twilio" else policy.telnyx_public_key
        )
    if secret is None:
        raise _signature_refused(
            policy,
            "webhook_secret_missing",
            f"No {webhook.provider} webhook secret is configured for this workspace.",
            workspace_id,
        )
    try:
        if isinstance(webhook, TwilioWebhook):
            webhooks.verify_twilio(secret, webhook.url, webhook.params, webhook.signature)
            call_id = webhooks.twilio_call_id(webhook.params)
        else:
            raw = _raw_body(webhook)
            webhooks.verify_telnyx(secret, raw, webhook.timestamp, webhook.signature, time.time())
            call_id = webhooks.telnyx_call_id(raw)
    except webhooks.WebhookSignatureError as exc:
        raise _signature_refused(policy, exc.code, str(exc), workspace_id) from exc
    if call_id is None or len(call_id) > 128:
        raise InvalidInputError(
            f"The signed {webhook.provider} webhook names no call (CallSid / call_control_id).",
            code="webhook_call_id_missing",
        )
    return call_id


def _raw_body(webhook: TelnyxWebhook) -> bytes:
    try:
        return base64.b64decode(webhook.body_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError("body_base64 is not base64.", code="invalid_call") from exc


def _signature_refused(
    policy: CallPolicy, code: str, why: str, workspace_id: str
) -> ForbiddenError:
    policy.refusals.warn(code, "webhook refused for workspace %s: %s (%s)", workspace_id, code, why)
    return ForbiddenError(f"Webhook signature refused: {why}.", code=code)


# --- the call's life -------------------------------------------------------------------------


def claim_call(
    session: Session,
    policy: CallPolicy,
    principal: Principal,
    stream_token: str,
    agent_id: str | None,
    stream: str | None = None,
) -> ClaimedCall:
    """Redeem a stream token, once: workspace and agent come from the token, never the caller.
    `stream` (phone or browser) is the kind of stream presenting it: a token opens only the
    kind of stream its call was issued for."""
    _require_service(principal)
    now = utcnow()
    try:
        grant = tokens.verify(policy.stream_token_key, stream_token, now)
    except tokens.StreamTokenError as exc:
        raise StreamTokenRefusedError(str(exc), code=exc.code) from exc
    if not token_fits(grant, agent_id):
        raise StreamTokenRefusedError(
            "The stream token was issued for another agent.", code="stream_token_mismatch"
        )
    call = session.get(Call, grant.call_id)
    if call is not None and stream is not None and call.channel not in STREAM_CHANNELS[stream]:
        raise ConflictError(
            f"This token belongs to a {call.channel} call; a {stream} stream cannot open it.",
            code="stream_token_channel",
        )
    lease_expires_at = now + timedelta(seconds=policy.lease_seconds)
    claimed = session.execute(
        update(Call)
        .where(col(Call.id) == grant.call_id)
        .where(col(Call.workspace_id) == grant.workspace_id)
        .where(col(Call.agent_id) == grant.agent_id)
        .where(col(Call.state).in_(claimable_states()))
        .values(state="active", claimed_at=now, lease_expires_at=lease_expires_at)
    )
    if call is None or claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise StreamTokenRefusedError(
            "The stream token was already used.", code="stream_token_used"
        )
    return ClaimedCall(
        call_id=grant.call_id,
        workspace_id=grant.workspace_id,
        agent_id=grant.agent_id,
        channel=call.channel,
        lease_seconds=policy.lease_seconds,
        lease_expires_at=lease_expires_at,
    )


def token_fits(grant: tokens.StreamGrant, agent_id: str | None) -> bool:
    """A token opens the stream of the agent it was issued for, no other."""
    return agent_id is None or agent_id == grant.agent_id


def claimable_states() -> tuple[str, ...]:
    """Only a call nobody has claimed yet: this is what makes a stream token single-use."""
    return ("issued",)


def renew_lease(
    session: Session, policy: CallPolicy, principal: Principal, call_id: str
) -> LeaseRenewed:
    _require_service(principal)
    lease_expires_at = utcnow() + timedelta(seconds=policy.lease_seconds)
    renewed = session.execute(
        update(Call)
        .where(col(Call.id) == call_id)
        .where(col(Call.state) == "active")
        .values(lease_expires_at=lease_expires_at)
    )
    if renewed.rowcount != 1:  # type: ignore[attr-defined]
        call = _get_call(session, call_id)
        raise ConflictError(
            f"Call {call_id} is {call.state}; its lease cannot be renewed.", code="call_not_active"
        )
    return LeaseRenewed(call_id=call_id, lease_expires_at=lease_expires_at)


def end_call(session: Session, principal: Principal, call_id: str, reason: str) -> Call:
    """Release the call's slot (idempotent); telemetry reports end calls the same way."""
    _require_service(principal)
    call = _get_call(session, call_id)
    mark_ended(session, {call_id: reason})
    session.refresh(call)
    return call


def release_unclaimed(session: Session, principal: Principal, call_id: str, reason: str) -> Call:
    """Release an issued call whose media stream never came (a worker's warm session that
    nobody claimed). A call a stream has claimed, here or on another worker, is left alone:
    409 `call_claimed`. Releasing twice, or a call that already ended, changes nothing."""
    _require_service(principal)
    call = _get_call(session, call_id)
    session.execute(
        update(Call)
        .where(col(Call.id) == call_id)
        .where(col(Call.state).in_(claimable_states()))
        .values(state="ended", ended_at=utcnow(), end_reason=reason[:64])
    )
    session.refresh(call)
    if call.state == "active":
        raise ConflictError(
            f"Call {call_id} was claimed by its media stream; it is not released.",
            code="call_claimed",
        )
    return call


# Ids bound in one statement: well under SQLite's and PostgreSQL's bound-parameter limits.
ENDED_PER_STATEMENT = 500


def mark_ended(session: Session, reasons: dict[str, str]) -> None:
    """End these calls (call id → end reason) and release their slots; ended ones stay."""
    now = utcnow()
    # One UPDATE per reason (a batch has a few), not per call: the session brings every UPDATE's
    # outcome to the calls it holds, so a statement per call cost the batch size squared.
    by_reason: dict[str, list[str]] = {}
    for call_id, reason in reasons.items():
        by_reason.setdefault(reason[:64], []).append(call_id)
    for reason, call_ids in by_reason.items():
        for start in range(0, len(call_ids), ENDED_PER_STATEMENT):
            session.execute(
                update(Call)
                .where(col(Call.id).in_(call_ids[start : start + ENDED_PER_STATEMENT]))
                .where(col(Call.state).in_(HOLDING_STATES))
                .values(state="ended", ended_at=now, end_reason=reason)
            )


def issued_calls(session: Session, call_ids: Sequence[str]) -> dict[str, Call]:
    if not call_ids:
        return {}
    rows = session.exec(select(Call).where(col(Call.id).in_(list(call_ids)))).all()
    return {row.id: row for row in rows}


def _get_call(session: Session, call_id: str) -> Call:
    call = session.get(Call, call_id)
    if call is None:
        raise NotFoundError(f"No call {call_id[:64]} was issued.", code="call_not_found")
    return call


def list_calls(
    session: Session,
    principal: Principal,
    workspace_id: str,
    state: str | None,
    limit: int,
    cursor: str | None = None,
) -> tuple[Sequence[Call], str | None, int, int]:
    """One page, newest first; the next page's cursor, how many calls hold a slot now and the
    workspace's cap."""
    settings = workspaces.get_settings(session, principal, workspace_id)
    query = select(Call).where(Call.workspace_id == workspace_id)
    if state is not None:
        query = query.where(Call.state == state)
    order = [col(Call.started_at), col(Call.id)]
    calls, next_cursor = page(
        session, query, order, [datetime, str], limit, cursor, newest_first=True
    )
    holding = holding_calls(session, workspace_id, utcnow())
    return calls, next_cursor, holding, settings.max_concurrent_calls
