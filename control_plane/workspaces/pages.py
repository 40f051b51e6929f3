"""A workspace's agents as pages: the list, and the form that creates and edits one. Picking
grok-realtime switches the voices to Grok's and warns when the workspace has no xAI key; the
tier rule (a tier the workspace may not use cannot be chosen) is the service's, as on REST."""

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlmodel import Session

from control_plane.auth.deps import UserDep, UserPrincipalDep
from control_plane.auth.principal import Principal
from control_plane.calls import service as calls
from control_plane.calls.deps import CallPolicyDep, ResolverDep
from control_plane.catalogue import service as catalogue
from control_plane.deps import SerializedCallWrites, SessionDep, SettingsDep
from control_plane.errors import ProblemError
from control_plane.keys import service as keys
from control_plane.pagination import CursorQuery
from control_plane.rollout.deps import GateDep
from control_plane.rollout.gate import FlagGate
from control_plane.telemetry import service as telemetry
from control_plane.web.rendering import CsrfDep, render, see_other
from control_plane.workspaces import service
from control_plane.workspaces.models import AgentCreate, AgentPatch

router = APIRouter(include_in_schema=False)


def agent_form_context(
    session: Session, gate: FlagGate, principal: Principal, workspace_id: str
) -> dict[str, Any]:
    voice_map, entries = catalogue.get_voice_map(session, "grok")
    has_keys = {s.provider: s.configured for s in keys.status(session, principal, workspace_id)}
    return {
        "cards": catalogue.tier_choices(session, gate, workspace_id),
        "voices": {p: catalogue.voice_names(session, p) for p in ("openai", "grok")},
        "voice_map": {"default": voice_map.default_voice, "entries": entries},
        "has_xai_key": has_keys.get("xai", False),
        "workspace_id": workspace_id,
    }


AGENTS_PER_PAGE = 100


@router.get("/workspaces/{workspace_id}/agents", response_class=HTMLResponse)
def agents_page(
    request: Request,
    workspace_id: str,
    session: SessionDep,
    user: UserDep,
    principal: UserPrincipalDep,
    cursor: CursorQuery = None,
) -> HTMLResponse:
    """The workspace's agents, oldest first, a page at a time (the REST list's cursors)."""
    listed, next_cursor = service.list_agents(
        session, principal, workspace_id, limit=AGENTS_PER_PAGE, cursor=cursor or None
    )
    return render(
        request,
        "agents.html",
        user,
        agents=[service.agent_read(session, a) for a in listed],
        workspace_id=workspace_id,
        next_cursor=next_cursor,
        later_page=bool(cursor),
        call_health=telemetry.workspace_call_health(session, principal, workspace_id),
    )


@router.get("/workspaces/{workspace_id}/agents/new", response_class=HTMLResponse)
@router.get("/workspaces/{workspace_id}/agents/{agent_id}/edit", response_class=HTMLResponse)
def agent_form(
    request: Request,
    workspace_id: str,
    session: SessionDep,
    gate: GateDep,
    user: UserDep,
    principal: UserPrincipalDep,
    agent_id: str | None = None,
) -> HTMLResponse:
    agent = service.get_agent(session, principal, workspace_id, agent_id) if agent_id else None
    return render(
        request,
        "agent_form.html",
        user,
        agent=agent,
        **agent_form_context(session, gate, principal, workspace_id),
    )


@router.post("/workspaces/{workspace_id}/agents", response_class=HTMLResponse)
@router.post("/workspaces/{workspace_id}/agents/{agent_id}", response_class=HTMLResponse)
def agent_save(
    request: Request,
    workspace_id: str,
    session: SessionDep,
    settings: SettingsDep,
    gate: GateDep,
    user: UserDep,
    principal: UserPrincipalDep,
    _csrf: CsrfDep,
    name: Annotated[str, Form(max_length=200)],
    pricing_tier: Annotated[str, Form(max_length=64)],
    voice: Annotated[str, Form(max_length=64)],
    instructions: Annotated[str, Form(max_length=20_000)] = "",
    language: Annotated[str, Form(max_length=32)] = "en",
    agent_id: str | None = None,
) -> Response:
    fields = {
        "name": name,
        "pricing_tier": pricing_tier,
        "voice": voice,
        "instructions": instructions,
        "language": language,
    }
    limits = service.agent_limits(settings)
    try:
        if agent_id:
            patch = AgentPatch.model_validate(fields)
            service.update_agent(
                session, principal, workspace_id, agent_id, patch, limits, gate=gate
            )
        else:
            body = AgentCreate.model_validate(fields)
            service.create_agent(session, principal, workspace_id, body, limits, gate=gate)
    except (ProblemError, ValueError) as exc:
        refused_tier = isinstance(exc, catalogue.TierNotEnabledError)
        if isinstance(exc, ProblemError) and exc.status != 422 and not refused_tier:
            raise
        message = (
            exc.detail
            if isinstance(exc, ProblemError)
            else "Check the fields: " + str(exc).split("\n")[0]
        )
        session.rollback()
        return render(
            request,
            "agent_form.html",
            user,
            status_code=422,
            error=message,
            agent=service.get_agent(session, principal, workspace_id, agent_id)
            if agent_id
            else None,
            submitted=fields,
            **agent_form_context(session, gate, principal, workspace_id),
        )
    return see_other(f"/workspaces/{workspace_id}/agents")


@router.post(
    "/workspaces/{workspace_id}/agents/{agent_id}/test-calls", dependencies=[SerializedCallWrites]
)
def start_test_call(
    workspace_id: str,
    agent_id: str,
    session: SessionDep,
    settings: SettingsDep,
    resolver: ResolverDep,
    policy: CallPolicyDep,
    principal: UserPrincipalDep,
    _csrf: CsrfDep,
) -> JSONResponse:
    """The agent page's test call, for a signed-in member: where to open it and its token (the
    page's script asks; refusals come back as problem+json with a readable detail)."""
    call = calls.start_browser_call(
        session, resolver, policy, principal, workspace_id, agent_id, settings.browser_call_url
    )
    return JSONResponse(call.model_dump(mode="json"), headers={"Cache-Control": "no-store"})
