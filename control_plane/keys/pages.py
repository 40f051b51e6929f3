"""The "Workspace API Keys" settings page: write-only fields, masked status, replace and remove."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session

from control_plane.auth.deps import UserDep, UserPrincipalDep
from control_plane.auth.models import User
from control_plane.auth.principal import Principal
from control_plane.deps import SessionDep
from control_plane.errors import ProblemError
from control_plane.keys import service
from control_plane.keys.deps import KeyringDep
from control_plane.web.rendering import CsrfDep, render, see_other

router = APIRouter(include_in_schema=False)


def keys_page(
    request: Request,
    session: Session,
    user: User,
    principal: Principal,
    workspace_id: str,
    *,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
) -> HTMLResponse:
    return render(
        request,
        "api_keys.html",
        user,
        status_code=status_code,
        workspace_id=workspace_id,
        statuses=service.status(session, principal, workspace_id),
        errors=errors or {},
    )


@router.get("/workspaces/{workspace_id}/settings/api-keys", response_class=HTMLResponse)
def api_keys_page(
    request: Request,
    workspace_id: str,
    session: SessionDep,
    user: UserDep,
    principal: UserPrincipalDep,
) -> HTMLResponse:
    return keys_page(request, session, user, principal, workspace_id)


@router.post("/workspaces/{workspace_id}/settings/api-keys", response_class=HTMLResponse)
def api_keys_save(
    request: Request,
    workspace_id: str,
    session: SessionDep,
    user: UserDep,
    principal: UserPrincipalDep,
    keyring: KeyringDep,
    _csrf: CsrfDep,
    provider: Annotated[str, Form(max_length=32)] = "xai",
    api_key: Annotated[str, Form(max_length=1024)] = "",
    action: Annotated[str, Form(max_length=16)] = "save",
) -> Response:
    try:
        value = None if action == "remove" else api_key
        changes = service.plan_changes(session, {f"{provider}{service.FIELD_SUFFIX}": value})
        service.apply_changes(session, keyring, principal, workspace_id, changes)
    except ProblemError as exc:
        if exc.status != 422:
            raise
        # Never rendered back: the field comes back empty, with the reason beside it.
        return keys_page(
            request,
            session,
            user,
            principal,
            workspace_id,
            status_code=422,
            errors={provider: exc.detail},
        )
    return see_other(f"/workspaces/{workspace_id}/settings/api-keys?saved={provider}")
