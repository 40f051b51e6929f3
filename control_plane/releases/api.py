"""REST for release plans (admin): set one, read its timeline, check it now, resume a hold."""

from fastapi import APIRouter, Request

from control_plane.auth.deps import AdminDep
from control_plane.deps import SessionDep
from control_plane.releases import service
from control_plane.releases.models import PlanCheck, PlanRead, PlanWrite
from control_plane.rollout.deps import GateDep

router = APIRouter(prefix="/api/v1", tags=["rollout"])


@router.get("/flags/{name}/plan", response_model=PlanRead, responses={404: {}})
def get_plan(name: str, session: SessionDep, _admin: AdminDep) -> PlanRead:
    return service.read(service.get_plan(session, name))


@router.put("/flags/{name}/plan", response_model=PlanRead, responses={404: {}, 409: {}})
def put_plan(
    name: str, body: PlanWrite, session: SessionDep, gate: GateDep, admin: AdminDep
) -> PlanRead:
    """Milestones in order; the flag moves to the first now unless it stands at one already."""
    return service.read(service.put_plan(session, gate, name, body, actor=admin.actor))


@router.post("/flags/{name}/plan/check", response_model=PlanCheck, responses={404: {}})
def check_plan(
    name: str, request: Request, session: SessionDep, gate: GateDep, _admin: AdminDep
) -> PlanCheck:
    """Look now (the control plane also looks every minute): advance, or say why not."""
    service.get_plan(session, name)
    return service.check(session, gate, name, outbound=request.app.state.outbound_policy)


@router.post("/flags/{name}/plan/resume", response_model=PlanRead, responses={404: {}, 409: {}})
def resume_plan(name: str, session: SessionDep, gate: GateDep, admin: AdminDep) -> PlanRead:
    """Go on after a hold, from where the flag stands."""
    return service.read(service.resume(session, gate, name, actor=admin.actor))
