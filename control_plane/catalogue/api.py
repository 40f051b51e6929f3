"""REST for the tier catalogue, voices and voice maps. Reads are public; writes need admin."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlmodel import Session

from control_plane.auth.deps import AdminDep, OptionalPrincipalDep
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
from control_plane.catalogue.reads import CatalogueReads, ReadKey, sorted_tiers, workspace_context
from control_plane.catalogue.snapshot import CatalogueData
from control_plane.deps import SessionDep
from control_plane.errors import NotFoundError
from control_plane.http import check_if_match, json_bytes, strong_etag
from control_plane.rollout.deps import GateDep
from control_plane.rollout.gate import FlagGate

router = APIRouter(prefix="/api/v1", tags=["catalogue"])


def with_availability(tier: TierRead, gate: FlagGate, workspace_id: str | None) -> TierRead:
    if workspace_id is None:
        return tier
    availability = service.tier_availability(gate, tier, workspace_id)
    return tier.model_copy(
        update={
            "available": availability.available,
            "unavailable_reason": availability.reason,
            "unavailable_code": availability.code,
        }
    )


def tier_read(data: CatalogueData, tier: Tier) -> TierRead:
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
        voices=data.voices.get(tier.voice_provider, []),
        expected_latency_ms=tier.expected_latency_ms,
        quality=tier.quality,
        flag_name=tier.flag_name,
        version=tier.version,
        updated_at=tier.updated_at,
    )


def get_reads(request: Request) -> CatalogueReads:
    reads: CatalogueReads = request.app.state.catalogue_reads
    return reads


ReadsDep = Annotated[CatalogueReads, Depends(get_reads)]


def tiers_key(tier_id: str | None, context: str | None, principal: Principal | None) -> ReadKey:
    return ("tier" if tier_id else "tiers", tier_id, context, principal is not None)


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
    reads: ReadsDep,
    workspace_id: WorkspaceQuery = None,
) -> Response:
    context = workspace_context(principal, workspace_id)

    def render(data: CatalogueData) -> bytes:
        tiers = [with_availability(tier_read(data, t), gate, context) for t in sorted_tiers(data)]
        return json_bytes(TierList(tiers=tiers))

    return reads.respond(request, session, tiers_key(None, context, principal), render)


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
    reads: ReadsDep,
    workspace_id: WorkspaceQuery = None,
) -> Response:
    context = workspace_context(principal, workspace_id)

    def render(data: CatalogueData) -> bytes:
        return json_bytes(with_availability(tier_read(data, data.tier(tier_id)), gate, context))

    return reads.respond(request, session, tiers_key(tier_id, context, principal), render)


@router.patch("/tiers/{tier_id}", response_model=TierRead)
def patch_tier(
    tier_id: str,
    patch: TierPatch,
    request: Request,
    response: Response,
    session: SessionDep,
    admin: AdminDep,
    reads: ReadsDep,
) -> TierRead:
    tier = service.get_tier(session, tier_id)
    data = reads.snapshot.get(session)
    check_if_match(request, strong_etag(json_bytes(tier_read(data, tier))))
    updated = service.update_tier(session, tier, patch, actor=admin.actor)
    # The snapshot is dropped on commit; the tier's voices are not what a PATCH changes.
    answer = tier_read(data, updated)
    response.headers["ETag"] = strong_etag(json_bytes(answer))
    return answer


@router.get("/voices", response_model=None, responses={200: {"model": VoiceList}})
def list_voices(
    request: Request,
    session: SessionDep,
    reads: ReadsDep,
    provider: Annotated[str | None, Query(max_length=64, description="e.g. grok or openai")] = None,
) -> Response:
    def render(_data: CatalogueData) -> bytes:
        voices = [
            VoiceRead(
                provider=v.provider, name=v.name, description=v.description, is_default=v.is_default
            )
            for v in service.list_voices(session, provider)
        ]
        return json_bytes(VoiceList(voices=voices))

    return reads.respond(request, session, ("voices", provider, None, False), render)


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
def get_voice_map(
    provider: str, request: Request, session: SessionDep, reads: ReadsDep
) -> Response:
    def render(_data: CatalogueData) -> bytes:
        return json_bytes(_voice_map_read(session, provider))

    return reads.respond(request, session, ("voice-map", provider, None, False), render)


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
