"""REST for workspace provider keys: write-only, per workspace, audited."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from control_plane.auth.deps import AdminDep, PrincipalDep
from control_plane.deps import SessionDep, SettingsDep
from control_plane.errors import ProblemError
from control_plane.keys import service
from control_plane.keys.deps import KeyringDep
from control_plane.keys.models import (
    ApiKeysStatus,
    ApiKeysUpdate,
    ApiKeysUpdated,
    KeyProviderRead,
    KeyProviderWrite,
    KeyVerification,
)
from control_plane.ratelimit import SlidingWindowLimit

router = APIRouter(prefix="/api/v1", tags=["keys"])


KEYS_PATH = "/workspaces/{workspace_id}/settings/api-keys"


@router.get(KEYS_PATH, response_model=ApiKeysStatus)
def get_keys(workspace_id: str, session: SessionDep, principal: PrincipalDep) -> ApiKeysStatus:
    return ApiKeysStatus(
        workspace_id=workspace_id, keys=service.status(session, principal, workspace_id)
    )


@router.put(KEYS_PATH, response_model=ApiKeysUpdated)
def put_keys(
    workspace_id: str,
    body: ApiKeysUpdate,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    keyring: KeyringDep,
    settings: SettingsDep,
    verify: Annotated[
        bool | None, Query(description="Check new xAI keys with xAI first (default from settings)")
    ] = None,
) -> ApiKeysUpdated:
    service.authorize(session, principal, workspace_id)
    changes = service.plan_changes(session, body.requested_changes())
    verification: list[KeyVerification] = []
    for change in changes:
        if change.new_key is None or change.provider.id != "xai":
            continue
        if verify if verify is not None else settings.xai_verify_keys:
            limit: SlidingWindowLimit = request.app.state.key_verifications
            wait = limit.acquire(workspace_id)
            if wait is not None:
                raise ProblemError(
                    f"This workspace checked {limit.limit} keys with xAI in the last hour; "
                    f"try again in {wait} s. Nothing was changed.",
                    status=429,
                    code="verification_rate_limited",
                    title="Too many requests",
                    headers={"Retry-After": str(wait)},
                )
            verification.append(
                service.verify_xai_key(
                    settings.xai_base_url, change.new_key, settings.xai_timeout_seconds
                )
            )
        else:
            verification.append(
                KeyVerification(
                    provider="xai", result="skipped", detail="verification not requested"
                )
            )
    keys = service.apply_changes(session, keyring, principal, workspace_id, changes)
    return ApiKeysUpdated(workspace_id=workspace_id, keys=keys, verification=verification)


@router.delete(
    KEYS_PATH + "/{provider}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
)
def delete_key(
    workspace_id: str, provider: str, session: SessionDep, principal: PrincipalDep
) -> Response:
    service.delete_key(session, principal, workspace_id, provider)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/key-providers", response_model=list[KeyProviderRead])
def list_providers(session: SessionDep, _principal: PrincipalDep) -> list[KeyProviderRead]:
    return [
        KeyProviderRead.model_validate(p, from_attributes=True)
        for p in service.list_providers(session)
    ]


@router.put("/key-providers/{provider_id}", response_model=KeyProviderRead)
def put_provider(
    provider_id: Annotated[str, Path(pattern=r"^[a-z0-9]{2,32}$")],
    body: KeyProviderWrite,
    session: SessionDep,
    admin: AdminDep,
) -> KeyProviderRead:
    provider = service.put_provider(session, provider_id, body, actor=admin.actor)
    return KeyProviderRead.model_validate(provider, from_attributes=True)
