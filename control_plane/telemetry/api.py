"""REST for call telemetry (service scope in), rollout health and guards (admin)."""

from typing import Annotated

from fastapi import APIRouter, Body, Query, Request

from control_plane.auth.deps import AdminDep, PrincipalDep, ServiceDep
from control_plane.deps import SerializedCallWrites, SessionDep
from control_plane.rollout.deps import GateDep
from control_plane.telemetry import service
from control_plane.telemetry.models import (
    CallBatch,
    CallReportIn,
    GuardRead,
    GuardWrite,
    IngestResult,
    RolloutHealth,
    WorkspaceCallHealth,
)

router = APIRouter(prefix="/api/v1", tags=["telemetry"])


@router.post("/telemetry/calls", response_model=IngestResult, dependencies=[SerializedCallWrites])
def report_calls(
    body: Annotated[CallReportIn | CallBatch, Body()],
    request: Request,
    session: SessionDep,
    _service: ServiceDep,
    gate: GateDep,
) -> IngestResult:
    """One call report or `{"calls": [...]}`; a call id already seen counts once."""
    reports = body.calls if isinstance(body, CallBatch) else [body]
    state = request.app.state
    return service.ingest(session, gate, reports, state.outbound_policy, looks=state.guard_looks)


@router.get("/rollouts/{flag}/health", response_model=RolloutHealth)
def rollout_health(
    flag: str,
    session: SessionDep,
    _admin: AdminDep,
    window_seconds: Annotated[int | None, Query(ge=60, le=30 * 86_400)] = None,
) -> RolloutHealth:
    return service.health(session, flag, window_seconds=window_seconds)


@router.get("/rollouts/{flag}/guard", response_model=GuardRead)
def get_guard(flag: str, session: SessionDep, _admin: AdminDep) -> GuardRead:
    return GuardRead.model_validate(service.get_guard(session, flag), from_attributes=True)


@router.patch("/rollouts/{flag}/guard", response_model=GuardRead)
def patch_guard(
    flag: str, body: GuardWrite, request: Request, session: SessionDep, admin: AdminDep
) -> GuardRead:
    outbound = request.app.state.outbound_policy
    guard = service.update_guard(session, flag, body, actor=admin.actor, outbound=outbound)
    return GuardRead.model_validate(guard, from_attributes=True)


@router.get(
    "/workspaces/{workspace_id}/call-health",
    response_model=WorkspaceCallHealth,
    responses={404: {}},
)
def workspace_call_health(
    workspace_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    days: Annotated[int, Query(ge=1, le=90)] = 7,
) -> WorkspaceCallHealth:
    """The workspace's own calls by whose fault they failed (its key, its tools, its callers)
    beside what counts against the tier. An admin or a token of the workspace."""
    return service.workspace_call_health(session, principal, workspace_id, days=days)
