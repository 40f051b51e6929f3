"""The rollout console's release plans: set one (as JSON), check it now, resume a hold. The
timeline itself is drawn by the console page (rollout/pages.py)."""

import json
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError

from control_plane.auth.deps import AdminUserDep
from control_plane.deps import SessionDep
from control_plane.errors import InvalidInputError
from control_plane.releases import service
from control_plane.releases.models import PlanWrite
from control_plane.rollout.deps import GateDep
from control_plane.web.rendering import CsrfDep, see_other

router = APIRouter(include_in_schema=False)


def _done(message: str, flag: str) -> Response:
    return see_other("/rollout?" + urlencode({"done": message}) + f"#plan-{flag}")


@router.post("/rollout/flags/{name}/plan")
def save_plan(
    name: str,
    session: SessionDep,
    gate: GateDep,
    user: AdminUserDep,
    _csrf: CsrfDep,
    milestones: Annotated[str, Form(max_length=50_000)],
    enabled: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    try:
        body = PlanWrite.model_validate(
            {"milestones": json.loads(milestones), "enabled": enabled == "yes"}
        )
    except (ValueError, ValidationError) as exc:
        first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise InvalidInputError(f"The plan is not valid: {first}", code="invalid_plan") from exc
    service.put_plan(session, gate, name, body, actor=f"user:{user.email}")
    return _done(f"{name}: release plan saved", name)


@router.post("/rollout/flags/{name}/plan/check")
def check_plan(
    name: str,
    request: Request,
    session: SessionDep,
    gate: GateDep,
    _user: AdminUserDep,
    _csrf: CsrfDep,
) -> Response:
    service.get_plan(session, name)
    result = service.check(session, gate, name, outbound=request.app.state.outbound_policy)
    return _done(f"{name}: {result.outcome} — {result.reason}", name)


@router.post("/rollout/flags/{name}/plan/resume")
def resume_plan(
    name: str, session: SessionDep, gate: GateDep, user: AdminUserDep, _csrf: CsrfDep
) -> Response:
    service.resume(session, gate, name, actor=f"user:{user.email}")
    return _done(f"{name}: release plan resumed", name)
