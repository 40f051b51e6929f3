"""The rollout console, for product admins: stages, beta percentage, cohorts, the kill
switch, per-cohort health against the targets, and the audit log."""

import json
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from control_plane.audit import service as audit
from control_plane.auth.deps import AdminUserDep
from control_plane.deps import SessionDep
from control_plane.errors import ProblemError
from control_plane.releases import service as releases
from control_plane.releases.models import ReleasePlan
from control_plane.rollout import service as rollout
from control_plane.rollout.deps import GateDep
from control_plane.rollout.models import STAGES, CohortWrite, RolloutChange
from control_plane.telemetry import service as telemetry
from control_plane.web.charts import line_chart
from control_plane.web.rendering import CsrfDep, render, see_other

router = APIRouter(include_in_schema=False)

# What the console offers to start from when a flag has no release plan yet.
EXAMPLE_PLAN = [
    {"name": "internal alpha", "stage": "internal", "min_dwell_hours": 168, "min_calls": 200},
    {"name": "beta 10 %", "stage": "beta", "beta_percentage": 10, "min_dwell_hours": 168},
    {
        "name": "beta 50 %",
        "stage": "beta",
        "beta_percentage": 50,
        "min_dwell_hours": 168,
        "min_calls": 500,
        "gates": {"nps_min": 40, "accuracy_min": 0.9},
    },
    {"name": "GA", "stage": "ga"},
]


@router.get("/rollout", response_class=HTMLResponse)
def rollout_page(
    request: Request,
    session: SessionDep,
    user: AdminUserDep,
    action: str | None = None,
    actor: str | None = None,
    target: str | None = None,
    workspace: str | None = None,
) -> HTMLResponse:
    flags = []
    for flag in rollout.list_flags(session):
        guard = telemetry.get_guard(session, flag.name)
        plan = session.get(ReleasePlan, flag.name)
        flags.append(
            {
                "flag": flag,
                "health": telemetry.health(session, flag.name),
                "guard": guard,
                "plan": releases.read(plan) if plan else None,
                "plan_json": json.dumps(plan.milestones if plan else EXAMPLE_PLAN, indent=2),
                "health_chart": line_chart(
                    telemetry.first_audio_p95_per_day(session, flag.name),
                    title=f"{flag.name}: first audio p95 per day, last 14 days",
                    target=guard.first_audio_p95_max_ms,
                    target_label="limit",
                    unit=" ms",
                    higher_is_better=False,
                ),
            }
        )
    entries = audit.list_entries(
        session,
        action=action or None,
        actor=actor or None,
        target=target or None,
        workspace_id=workspace or None,
        limit=50,
    )
    return render(
        request,
        "rollout.html",
        user,
        flags=flags,
        stages=STAGES,
        cohorts=rollout.list_cohorts(session),
        entries=entries,
        filters={
            "action": action or "",
            "actor": actor or "",
            "target": target or "",
            "workspace": workspace or "",
        },
    )


def _rollout_done(message: str) -> Response:
    return see_other("/rollout?" + urlencode({"done": message}))


@router.post("/rollout/flags/{name}/stage")
def rollout_stage(
    name: str,
    session: SessionDep,
    gate: GateDep,
    user: AdminUserDep,
    _csrf: CsrfDep,
    stage: Annotated[str, Form()],
) -> Response:
    rollout.set_stage(session, gate, name, stage, actor=f"user:{user.email}")
    return _rollout_done(f"{name} moved to {stage}")


@router.post("/rollout/flags/{name}/percentage")
def rollout_percentage(
    name: str,
    session: SessionDep,
    gate: GateDep,
    user: AdminUserDep,
    _csrf: CsrfDep,
    percentage: Annotated[int, Form(ge=0, le=100)],
) -> Response:
    rollout.set_rollout(
        session, gate, name, RolloutChange(percentage=percentage), actor=f"user:{user.email}"
    )
    return _rollout_done(f"{name}: beta percentage {percentage}%")


@router.post("/rollout/flags/{name}/kill")
def rollout_kill(
    name: str,
    session: SessionDep,
    gate: GateDep,
    user: AdminUserDep,
    _csrf: CsrfDep,
    confirm: Annotated[str, Form()] = "",
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    if confirm != "yes":
        raise ProblemError(
            "Tick the confirmation to use the kill switch.",
            status=422,
            code="confirmation_required",
        )
    rollout.kill(session, gate, name, actor=f"user:{user.email}", reason=reason or None)
    return _rollout_done(f"{name} killed")


@router.post("/rollout/flags/{name}/resume")
def rollout_resume(
    name: str, session: SessionDep, gate: GateDep, user: AdminUserDep, _csrf: CsrfDep
) -> Response:
    rollout.resume(session, gate, name, actor=f"user:{user.email}")
    return _rollout_done(f"{name} resumed")


@router.post("/rollout/cohorts/{name}")
def rollout_cohort(
    name: str,
    session: SessionDep,
    gate: GateDep,
    user: AdminUserDep,
    _csrf: CsrfDep,
    members: Annotated[str, Form(max_length=100_000)] = "",
) -> Response:
    workspace_ids = [m.strip() for m in members.replace(",", "\n").splitlines() if m.strip()]
    rollout.put_cohort(
        session, gate, name, CohortWrite(members=workspace_ids), actor=f"user:{user.email}"
    )
    return _rollout_done(f"cohort {name} saved")
