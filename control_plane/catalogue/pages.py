"""The tier catalogue as a page: a card per tier, and for a workspace whether it is open to it."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from control_plane.auth.deps import UserDep, UserPrincipalDep
from control_plane.catalogue import service
from control_plane.deps import SessionDep
from control_plane.rollout.deps import GateDep
from control_plane.web.rendering import render
from control_plane.workspaces import service as workspaces

router = APIRouter(include_in_schema=False)


@router.get("/tiers", response_class=HTMLResponse)
def tiers_page(
    request: Request,
    session: SessionDep,
    gate: GateDep,
    user: UserDep,
    principal: UserPrincipalDep,
    workspace_id: str | None = None,
) -> HTMLResponse:
    workspace = workspace_id or user.workspace_id
    if workspace:
        workspaces.get_workspace(session, principal, workspace)  # 404 for another's workspace
    return render(
        request,
        "tiers.html",
        user,
        cards=service.tier_choices(session, gate, workspace),
        workspace_id=workspace,
        # Suggestions only: any workspace id can be typed, however many there are.
        workspaces=workspaces.list_workspaces(session, principal)[0],
    )
