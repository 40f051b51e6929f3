"""REST for the tier catalogue, voices and voice maps. Reads are public; writes need admin."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlmodel import Session

from control_plane.auth.principal import Principal
from control_plane.catalogue import service
from control_plane.catalogue.models import (
    ProviderConfig,
    Tier,
    TierList,
    TierPatch,
    TierRead,
    VoiceList,
    VoiceMapRead,
    VoiceMapWrite,
    VoiceRead,
    VoiceResolution,
)
from control_plane.deps import AdminDep, GateDep, OptionalPrincipalDep, SessionDep
from control_plane.errors import NotFoundError
from control_plane.http import check_if_match, conditional_json, json_bytes, strong_etag
from control_plane.rollout.gate import FlagGate

router = APIRouter(prefix="/api/v1", tags=["catalogue"])

PUBLIC_CACHE = "public, max-age=30, must-revalidate"
PRIVATE_CACHE = "private, max-age=0, must-revalidate"


def workspace_context(principal: Principal | None, workspace_id: str | None) -> str | None:
    """Whose view of the catalogue: ?workspace_id=, or the caller's only workspace."""
    if principal is None:
        return None
    if workspace_id is not None:
        if not principal.can_access_workspace(workspace_id):
            raise NotFoundError(
                f"Workspace '{workspace_id}' not found.", code="workspace_not_found"
            )
        return workspace_id
    if len(principal.workspace_ids) == 1 and not principal.is_admin:
        return next(iter(principal.workspace_ids))
    return None


def with_availability(tier: TierRead, gate: FlagGate, workspace_id: str | None) -> TierRead:
    if workspace_id is None:
        return tier
    if tier.flag_name is None:
        return tier.model_copy(update={"available": True})
    decision = gate.decide(tier.flag_name, workspace_id, subject=tier.name)
    return tier.model_copy(
        update={
            "available": decision.enabled,
            "unavailable_reason": decision.reason,
            "unavailable_code": None
            if decision.enabled
            else ("tier_disabled" if decision.killed else "tier_not_enabled"),
        }
    )


def tier_read(session: Session, tier: Tier) -> TierRead:
    return TierRead(
        id=tier.id,
        name=tier.name,
        description=tier.description,
        cost_per_hour=float(tier.cost_per_hour),
        cost_per_minute=float(tier.cost_per_minute),
        pricing_source=tier.pricing_source,
        features=tier.features,
        engine=tier.engine,
        provider_config=ProviderConfig(
            llm_provider=tier.llm_provider,
            llm_model=tier.llm_model,
            stt_provider=tier.stt_provider,
            stt_model=tier.stt_model,
            tts_provider=tier.tts_provider,
            tts_model=tier.tts_model,
            telephony_provider=tier.telephony_provider,
        ),
        voice_provider=tier.voice_provider,
        voices=service.voice_names(session, tier.voice_provider),
        expected_latency_ms=tier.expected_latency_ms,
        quality=tier.quality,
        flag_name=tier.flag_name,
        version=tier.version,
        updated_at=tier.updated_at,
    )


WorkspaceQuery = Annotated[
    str | None,
    Query(max_length=64, description="Show availability for this workspace (admin or its token)"),
]


@router.get("/tiers", response_model=None, responses={200: {"model": TierList}})
def list_tiers(
    request: Request,
    session: SessionDep,
    principal: OptionalPrincipalDep,
    gate: GateDep,
    workspace_id: WorkspaceQuery = None,
) -> Response:
    context = workspace_context(principal, workspace_id)
    tiers = [
        with_availability(tier_read(session, t), gate, context) for t in service.list_tiers(session)
    ]
    return conditional_json(
        request,
        json_bytes(TierList(tiers=tiers)),
        cache_control=PRIVATE_CACHE if principal else PUBLIC_CACHE,
        vary="Authorization",
    )


@router.get(
    "/tiers/{tier_id}",
    response_model=None,
    responses={200: {"model": TierRead}, 404: {"description": "Unknown tier"}},
)
def get_tier(
    tier_id: str,
    request: Request,
    session: SessionDep,
    principal: OptionalPrincipalDep,
    gate: GateDep,
    workspace_id: WorkspaceQuery = None,
) -> Response:
    context = workspace_context(principal, workspace_id)
    tier = with_availability(tier_read(session, service.get_tier(session, tier_id)), gate, context)
    return conditional_json(
        request,
        json_bytes(tier),
        cache_control=PRIVATE_CACHE if principal else PUBLIC_CACHE,
        vary="Authorization",
    )


@router.patch("/tiers/{tier_id}", response_model=TierRead)
def patch_tier(
    tier_id: str,
    patch: TierPatch,
    request: Request,
    response: Response,
    session: SessionDep,
    admin: AdminDep,
) -> TierRead:
    tier = service.get_tier(session, tier_id)
    check_if_match(request, strong_etag(json_bytes(tier_read(session, tier))))
    updated = tier_read(session, service.update_tier(session, tier, patch, actor=admin.actor))
    response.headers["ETag"] = strong_etag(json_bytes(updated))
    return updated


@router.get("/voices", response_model=VoiceList)
def list_voices(
    session: SessionDep,
    provider: Annotated[str | None, Query(max_length=64, description="e.g. grok or openai")] = None,
) -> VoiceList:
    return VoiceList(
        voices=[
            VoiceRead(
                provider=v.provider, name=v.name, description=v.description, is_default=v.is_default
            )
            for v in service.list_voices(session, provider)
        ]
    )


def _voice_map_read(session: Session, provider: str) -> VoiceMapRead:
    voice_map, entries = service.get_voice_map(session, provider)
    return VoiceMapRead(
        target_provider=voice_map.target_provider,
        source_provider=voice_map.source_provider,
        default_voice=voice_map.default_voice,
        entries=entries,
        version=voice_map.version,
        updated_at=voice_map.updated_at,
        updated_by=voice_map.updated_by,
    )


@router.get("/voice-maps/{provider}", response_model=None, responses={200: {"model": VoiceMapRead}})
def get_voice_map(provider: str, request: Request, session: SessionDep) -> Response:
    body = json_bytes(_voice_map_read(session, provider))
    return conditional_json(request, body, cache_control=PUBLIC_CACHE)


@router.get("/voice-maps/{provider}/resolve", response_model=VoiceResolution)
def resolve_voice(
    provider: str,
    session: SessionDep,
    voice: Annotated[str, Query(min_length=1, max_length=64)],
) -> VoiceResolution:
    return service.resolve_voice(session, provider, voice)


@router.put("/voice-maps/{provider}", response_model=VoiceMapRead)
def put_voice_map(
    provider: str,
    body: VoiceMapWrite,
    request: Request,
    response: Response,
    session: SessionDep,
    admin: AdminDep,
) -> VoiceMapRead:
    try:
        current = _voice_map_read(session, provider)
    except NotFoundError:
        current = None
    if current is not None:
        check_if_match(request, strong_etag(json_bytes(current)))
    service.put_voice_map(session, provider, body, actor=admin.actor)
    updated = _voice_map_read(session, provider)
    response.headers["ETag"] = strong_etag(json_bytes(updated))
    return updated
