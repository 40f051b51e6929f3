"""REST for workspaces, their settings and agents. Admin, or a token of that workspace."""

from fastapi import APIRouter, Request, Response, status

from control_plane.auth.deps import PrincipalDep
from control_plane.catalogue.reads import PRIVATE_CACHE
from control_plane.deps import SessionDep, SettingsDep
from control_plane.http import json_bytes
from control_plane.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery
from control_plane.rollout.deps import GateDep
from control_plane.served import Served, served_response
from control_plane.workspaces import service
from control_plane.workspaces.cache import AgentPages
from control_plane.workspaces.models import (
    AgentCreate,
    AgentList,
    AgentPatch,
    AgentRead,
    WorkspaceCreate,
    WorkspaceList,
    WorkspaceRead,
    WorkspaceSettingsPatch,
    WorkspaceSettingsRead,
)

router = APIRouter(prefix="/api/v1/workspaces", tags=["workspaces"])


@router.post("", response_model=WorkspaceRead, status_code=status.HTTP_201_CREATED)
def create_workspace(
    body: WorkspaceCreate, session: SessionDep, principal: PrincipalDep
) -> WorkspaceRead:
    workspace = service.create_workspace(session, principal, body)
    return WorkspaceRead.model_validate(workspace, from_attributes=True)


@router.get("", response_model=WorkspaceList)
def list_workspaces(
    session: SessionDep,
    principal: PrincipalDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> WorkspaceList:
    rows, next_cursor = service.list_workspaces(session, principal, limit, cursor)
    return WorkspaceList(
        workspaces=[WorkspaceRead.model_validate(w, from_attributes=True) for w in rows],
        next_cursor=next_cursor,
    )


@router.get("/{workspace_id}", response_model=WorkspaceRead)
def get_workspace(workspace_id: str, session: SessionDep, principal: PrincipalDep) -> WorkspaceRead:
    workspace = service.get_workspace(session, principal, workspace_id)
    return WorkspaceRead.model_validate(workspace, from_attributes=True)


@router.get("/{workspace_id}/settings", response_model=WorkspaceSettingsRead)
def get_settings(
    workspace_id: str, session: SessionDep, principal: PrincipalDep
) -> WorkspaceSettingsRead:
    settings = service.get_settings(session, principal, workspace_id)
    return WorkspaceSettingsRead.model_validate(settings, from_attributes=True)


@router.patch("/{workspace_id}/settings", response_model=WorkspaceSettingsRead)
def patch_settings(
    workspace_id: str, body: WorkspaceSettingsPatch, session: SessionDep, principal: PrincipalDep
) -> WorkspaceSettingsRead:
    settings = service.update_settings(session, principal, workspace_id, body)
    return WorkspaceSettingsRead.model_validate(settings, from_attributes=True)


@router.post(
    "/{workspace_id}/agents", response_model=AgentRead, status_code=status.HTTP_201_CREATED
)
def create_agent(
    workspace_id: str,
    body: AgentCreate,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    gate: GateDep,
) -> AgentRead:
    limits = service.agent_limits(settings)
    agent = service.create_agent(session, principal, workspace_id, body, limits, gate=gate)
    return service.agent_read(session, agent)


@router.get("/{workspace_id}/agents", response_model=None, responses={200: {"model": AgentList}})
def list_agents(
    workspace_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Response:
    """A page of the workspace's agents, oldest first, served from memory until it changes."""
    pages: AgentPages = request.app.state.agent_pages
    key = (workspace_id, limit, cursor or None)  # empty: the first page, as the fast path keys it
    served = pages.get(key) if principal.can_access_workspace(workspace_id) else None
    if served is None:
        stamp = pages.stamp(workspace_id)
        agents, next_cursor = service.list_agents(session, principal, workspace_id, limit, cursor)
        catalogue = request.app.state.catalogue_reads.snapshot.get(session)
        page = AgentList(
            agents=[service.agent_read(session, a, catalogue) for a in agents],
            next_cursor=next_cursor,
        )
        served = Served.of(json_bytes(page), PRIVATE_CACHE, vary="Authorization")
        pages.put(key, served, stamp)
    return served_response(request, served)


@router.get("/{workspace_id}/agents/{agent_id}", response_model=AgentRead)
def get_agent(
    workspace_id: str, agent_id: str, session: SessionDep, principal: PrincipalDep
) -> AgentRead:
    return service.agent_read(
        session, service.get_agent(session, principal, workspace_id, agent_id)
    )


@router.patch("/{workspace_id}/agents/{agent_id}", response_model=AgentRead)
def patch_agent(
    workspace_id: str,
    agent_id: str,
    body: AgentPatch,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    gate: GateDep,
) -> AgentRead:
    limits = service.agent_limits(settings)
    agent = service.update_agent(
        session, principal, workspace_id, agent_id, body, limits, gate=gate
    )
    return service.agent_read(session, agent)


@router.delete(
    "/{workspace_id}/agents/{agent_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
def delete_agent(
    workspace_id: str, agent_id: str, session: SessionDep, principal: PrincipalDep
) -> Response:
    service.delete_agent(session, principal, workspace_id, agent_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
