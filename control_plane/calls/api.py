"""REST for issued calls: issue, claim, renew, end, release (service); list (admin, workspace)."""

from typing import Literal

from fastapi import APIRouter, Request, Response, status

from control_plane.auth.deps import PrincipalDep, ServiceDep
from control_plane.calls import service
from control_plane.calls.deps import CallPolicyDep, ResolverDep
from control_plane.calls.models import (
    BrowserCall,
    CallClaim,
    CallEnd,
    CallIssue,
    CallList,
    CallRead,
    ClaimedCall,
    IssuedCall,
    LeaseRenewed,
    SafeId,
)
from control_plane.deps import SerializedCallWrites, SessionDep, SettingsDep
from control_plane.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery

router = APIRouter(prefix="/api/v1", tags=["calls"])


def _policy(request: Request) -> service.CallPolicy:
    policy: service.CallPolicy = request.app.state.call_policy
    return policy


@router.post(
    "/workspaces/{workspace_id}/agents/{agent_id}/calls",
    response_model=IssuedCall,
    status_code=status.HTTP_201_CREATED,
    dependencies=[SerializedCallWrites],
    responses={
        403: {"description": "webhook_signature_invalid / tier_not_enabled / tier_disabled"},
        404: {"description": "workspace_not_found / agent_not_found"},
        409: {"description": "xai_api_key_missing"},
        429: {"description": "call_limit_reached"},
    },
)
def issue_call(
    workspace_id: str,
    agent_id: str,
    body: CallIssue,
    request: Request,
    response: Response,
    session: SessionDep,
    principal: ServiceDep,
) -> IssuedCall:
    """Issue a call: checks the phone webhook's signature, refuses it as a session config would
    be refused, holds one of the workspace's call slots and returns a single-use stream token."""
    response.headers["Cache-Control"] = "no-store"
    return service.issue_call(
        session,
        request.app.state.resolver,
        _policy(request),
        principal,
        workspace_id,
        agent_id,
        body,
    )


@router.post(
    "/calls/claim",
    response_model=ClaimedCall,
    dependencies=[SerializedCallWrites],
    responses={401: {}, 403: {}},
)
def claim_call(
    body: CallClaim, request: Request, session: SessionDep, principal: ServiceDep
) -> ClaimedCall:
    """Redeem a stream token once; the answer names the call's workspace and agent."""
    return service.claim_call(
        session, _policy(request), principal, body.stream_token, body.agent_id, body.stream
    )


@router.post(
    "/workspaces/{workspace_id}/agents/{agent_id}/test-calls",
    response_model=BrowserCall,
    status_code=status.HTTP_201_CREATED,
    dependencies=[SerializedCallWrites],
    responses={
        403: {"description": "tier_not_enabled / tier_disabled"},
        404: {"description": "workspace_not_found / agent_not_found"},
        409: {"description": "xai_api_key_missing / engine_not_supported / test_calls_unavailable"},
        429: {"description": "call_limit_reached"},
    },
)
def start_test_call(
    workspace_id: str,
    agent_id: str,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    resolver: ResolverDep,
    policy: CallPolicyDep,
) -> BrowserCall:
    """Talk to an agent from a browser: the same checks as a phone call (tier, key, call cap,
    grok-realtime only), then the worker's browser stream and a single-use token for it."""
    response.headers["Cache-Control"] = "no-store"
    return service.start_browser_call(
        session, resolver, policy, principal, workspace_id, agent_id, settings.browser_call_url
    )


@router.post(
    "/calls/{call_id}/lease",
    response_model=LeaseRenewed,
    dependencies=[SerializedCallWrites],
    responses={404: {}, 409: {}},
)
def renew_lease(
    call_id: SafeId, request: Request, session: SessionDep, principal: ServiceDep
) -> LeaseRenewed:
    """Keep a running call's slot; a call whose lease lapses no longer counts."""
    return service.renew_lease(session, _policy(request), principal, call_id)


@router.post(
    "/calls/{call_id}/end",
    response_model=CallRead,
    dependencies=[SerializedCallWrites],
    responses={404: {}},
)
def end_call(
    call_id: SafeId, body: CallEnd, session: SessionDep, principal: ServiceDep
) -> CallRead:
    """Release a call that ended without a telemetry report (idempotent)."""
    call = service.end_call(session, principal, call_id, body.reason)
    return CallRead.model_validate(call, from_attributes=True)


@router.post(
    "/calls/{call_id}/release",
    response_model=CallRead,
    dependencies=[SerializedCallWrites],
    responses={404: {}, 409: {"description": "call_claimed"}},
)
def release_call(
    call_id: SafeId, body: CallEnd, session: SessionDep, principal: ServiceDep
) -> CallRead:
    """Release an issued call whose media stream never came; a claimed call is left alone."""
    call = service.release_unclaimed(session, principal, call_id, body.reason)
    return CallRead.model_validate(call, from_attributes=True)


@router.get("/workspaces/{workspace_id}/calls", response_model=CallList, responses={404: {}})
def list_calls(
    workspace_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    state: Literal["issued", "active", "ended", "lapsed"] | None = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> CallList:
    """The workspace's calls, newest first, with how many hold a slot against its limit."""
    calls, next_cursor, active, cap = service.list_calls(
        session, principal, workspace_id, state, limit, cursor
    )
    return CallList(
        calls=[CallRead.model_validate(c, from_attributes=True) for c in calls],
        next_cursor=next_cursor,
        active=active,
        max_concurrent_calls=cap,
    )
