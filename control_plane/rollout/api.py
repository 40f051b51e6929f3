"""REST for flags and cohorts (admin), and Unleash's client API for any Unleash SDK."""

import hmac
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response, status
from sqlmodel import Session

from control_plane.auth import service as auth_service
from control_plane.auth.bearer import client_token
from control_plane.auth.cache import TokenCache
from control_plane.auth.deps import AdminDep, TokenCacheDep, authenticate
from control_plane.deps import SessionDep, SettingsDep
from control_plane.errors import UnauthorizedError
from control_plane.http import check_if_match, conditional_json, json_bytes, strong_etag
from control_plane.rollout import service
from control_plane.rollout.deps import GateDep
from control_plane.rollout.models import (
    Cohort,
    CohortList,
    CohortRead,
    CohortWrite,
    Flag,
    FlagDecision,
    FlagList,
    FlagRead,
    RolloutChange,
    StageChange,
)
from control_plane.served import served_response
from control_plane.settings import Settings

COHORT_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"  # what rollout.service.put_cohort accepts
router = APIRouter(prefix="/api/v1", tags=["rollout"])
client_router = APIRouter(prefix="/api/client", tags=["unleash client API"])


def flag_read(flag: Flag) -> FlagRead:
    return FlagRead.model_validate(flag, from_attributes=True)


def _flag_response(response: Response, flag: Flag) -> FlagRead:
    read = flag_read(flag)
    response.headers["ETag"] = strong_etag(json_bytes(read))
    return read


@router.get("/flags", response_model=FlagList)
def list_flags(session: SessionDep, gate: GateDep, _admin: AdminDep) -> FlagList:
    return FlagList(flags=[flag_read(f) for f in service.list_flags(session)], mode=gate.mode)


@router.get("/flags/{name}", response_model=None, responses={200: {"model": FlagRead}})
def get_flag(name: str, request: Request, session: SessionDep, _admin: AdminDep) -> Response:
    body = json_bytes(flag_read(service.get_flag(session, name)))
    return conditional_json(request, body, cache_control="private, no-cache")


def _check_flag_version(request: Request, session: SessionDep, name: str) -> None:
    check_if_match(request, strong_etag(json_bytes(flag_read(service.get_flag(session, name)))))


@router.put("/flags/{name}/stage", response_model=FlagRead)
def put_stage(
    name: str,
    body: StageChange,
    request: Request,
    response: Response,
    session: SessionDep,
    gate: GateDep,
    admin: AdminDep,
) -> FlagRead:
    _check_flag_version(request, session, name)
    return _flag_response(
        response, service.set_stage(session, gate, name, body.stage, actor=admin.actor)
    )


@router.put("/flags/{name}/rollout", response_model=FlagRead)
def put_rollout(
    name: str,
    body: RolloutChange,
    request: Request,
    response: Response,
    session: SessionDep,
    gate: GateDep,
    admin: AdminDep,
) -> FlagRead:
    _check_flag_version(request, session, name)
    return _flag_response(
        response, service.set_rollout(session, gate, name, body, actor=admin.actor)
    )


@router.post("/flags/{name}/kill", response_model=FlagRead)
def kill_flag(
    name: str,
    request: Request,
    response: Response,
    session: SessionDep,
    gate: GateDep,
    admin: AdminDep,
    reason: Annotated[str | None, Query(max_length=500)] = None,
) -> FlagRead:
    _check_flag_version(request, session, name)
    return _flag_response(
        response, service.kill(session, gate, name, actor=admin.actor, reason=reason)
    )


@router.post("/flags/{name}/resume", response_model=FlagRead)
def resume_flag(
    name: str,
    request: Request,
    response: Response,
    session: SessionDep,
    gate: GateDep,
    admin: AdminDep,
) -> FlagRead:
    _check_flag_version(request, session, name)
    return _flag_response(response, service.resume(session, gate, name, actor=admin.actor))


@router.get("/flags/{name}/decision", response_model=FlagDecision)
def flag_decision(
    name: str,
    session: SessionDep,
    gate: GateDep,
    _admin: AdminDep,
    workspace_id: Annotated[str, Query(min_length=1, max_length=64)],
) -> FlagDecision:
    service.get_flag(session, name)
    return gate.decide(name, workspace_id)


def cohort_read(cohort: Cohort) -> CohortRead:
    return CohortRead.model_validate(cohort, from_attributes=True)


@router.get("/cohorts", response_model=CohortList)
def list_cohorts(session: SessionDep, _admin: AdminDep) -> CohortList:
    return CohortList(cohorts=[cohort_read(c) for c in service.list_cohorts(session)])


@router.get("/cohorts/{name}", response_model=None, responses={200: {"model": CohortRead}})
def get_cohort(name: str, request: Request, session: SessionDep, _admin: AdminDep) -> Response:
    return conditional_json(
        request,
        json_bytes(cohort_read(service.get_cohort(session, name))),
        cache_control="private, no-cache",
    )


@router.put("/cohorts/{name}", response_model=CohortRead)
def put_cohort(
    name: Annotated[str, Path(pattern=COHORT_NAME_PATTERN)],
    body: CohortWrite,
    request: Request,
    response: Response,
    session: SessionDep,
    gate: GateDep,
    admin: AdminDep,
) -> CohortRead:
    existing = session.get(Cohort, name)
    if existing is not None:
        check_if_match(request, strong_etag(json_bytes(cohort_read(existing))))
    read = cohort_read(service.put_cohort(session, gate, name, body, actor=admin.actor))
    response.headers["ETag"] = strong_etag(json_bytes(read))
    return read


# --- Unleash client API ----------------------------------------------------------------------


def _client_token_ok(
    authorization: str, settings: Settings, cache: TokenCache, session: Session
) -> bool:
    token = client_token(authorization)
    if settings.client_api_tokens is not None:
        for allowed in settings.client_api_tokens.get_secret_value().split(","):
            if allowed.strip() and hmac.compare_digest(allowed.strip().encode(), token.encode()):
                return True
    if token.startswith(auth_service.TOKEN_PREFIX):
        try:
            principal = authenticate(cache, session, token)
        except UnauthorizedError:
            return False
        return principal.is_admin or principal.is_service
    return False


def require_client_token(
    request: Request, settings: SettingsDep, session: SessionDep, cache: TokenCacheDep
) -> None:
    authorization = request.headers.get("authorization", "")
    if not authorization or not _client_token_ok(authorization, settings, cache, session):
        raise UnauthorizedError(
            "Send an Unleash client token (SWITCHBOARD_CLIENT_API_TOKENS) or a service token "
            "in the Authorization header.",
            code="invalid_client_token",
        )


ClientDep = Annotated[None, Depends(require_client_token)]


@client_router.get(
    "/features",
    response_model=None,
    responses={200: {"description": "Unleash client API features document (version 2)"}},
)
def client_features(request: Request, gate: GateDep, _client: ClientDep) -> Response:
    return served_response(request, gate.client_document)


@client_router.post("/register", status_code=status.HTTP_202_ACCEPTED, response_class=Response)
def client_register(_client: ClientDep, _body: Annotated[dict[str, object], Body()]) -> Response:
    return Response(status_code=status.HTTP_202_ACCEPTED)


@client_router.post("/metrics", status_code=status.HTTP_202_ACCEPTED, response_class=Response)
def client_metrics(_client: ClientDep, _body: Annotated[dict[str, object], Body()]) -> Response:
    return Response(status_code=status.HTTP_202_ACCEPTED)
