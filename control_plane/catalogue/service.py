"""The tier catalogue and voice maps: reads, operator edits, voice validation and mapping."""

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from sqlmodel import Session, col, select

from control_plane.audit import service as audit
from control_plane.catalogue.models import (
    Tier,
    TierPatch,
    Voice,
    VoiceMap,
    VoiceMapEntry,
    VoiceMapWrite,
    VoiceResolution,
)
from control_plane.changes import notify
from control_plane.core import utcnow
from control_plane.errors import InvalidInputError, NotFoundError, ProblemError

if TYPE_CHECKING:
    from control_plane.rollout.gate import FlagGate
    from control_plane.rollout.models import FlagDecision

# Every session config depends on the catalogue (workspaces.service re-exports this name).
ALL_CONFIGS_TOPIC = "config:*"


class GatedTier(Protocol):
    """A tier as any layer holds it (row, snapshot entry or read model)."""

    @property
    def name(self) -> str: ...

    @property
    def flag_name(self) -> str | None: ...


@dataclass(frozen=True)
class TierAvailability:
    """Whether a workspace may use a tier now, and if not, why: the one rule that session
    configs, agent writes (both 403 `TierNotEnabledError`), the catalogue's `available` and
    the pages all obey."""

    available: bool
    reason: str | None = None
    code: str | None = None  # tier_not_enabled, or tier_disabled when the kill switch is on
    decision: "FlagDecision | None" = None


class TierNotEnabledError(ProblemError):
    """The workspace may not use this tier now (`code` says whether the flag is off for it,
    `tier_not_enabled`, or the kill switch is on, `tier_disabled`)."""

    status = 403
    code = "tier_not_enabled"
    title = "Tier not enabled"


def tier_availability(gate: "FlagGate", tier: GatedTier, workspace_id: str) -> TierAvailability:
    if not tier.flag_name:
        return TierAvailability(True)
    decision = gate.decide(tier.flag_name, workspace_id, subject=tier.name)
    if decision.enabled:
        return TierAvailability(True, decision=decision)
    return TierAvailability(
        False,
        decision.reason or f"{tier.name} is not enabled for this workspace.",
        "tier_disabled" if decision.killed else "tier_not_enabled",
        decision,
    )


def list_tiers(session: Session) -> Sequence[Tier]:
    return session.exec(select(Tier).order_by(col(Tier.sort_order), col(Tier.id))).all()


@dataclass(frozen=True)
class TierChoice:
    """A tier as a workspace may choose it: its voices and whether it is open to the
    workspace now (always, when no workspace is in view)."""

    tier: Tier
    voices: list[str]
    availability: TierAvailability


def tier_choices(session: Session, gate: "FlagGate", workspace_id: str | None) -> list[TierChoice]:
    return [
        TierChoice(
            tier,
            voice_names(session, tier.voice_provider),
            tier_availability(gate, tier, workspace_id) if workspace_id else TierAvailability(True),
        )
        for tier in list_tiers(session)
    ]


def get_tier(session: Session, tier_id: str) -> Tier:
    tier = session.get(Tier, tier_id)
    if tier is None:
        raise NotFoundError(f"Tier '{tier_id}' does not exist.", code="tier_not_found")
    return tier


def update_tier(session: Session, tier: Tier, patch: TierPatch, *, actor: str) -> Tier:
    changes = patch.model_dump(exclude_unset=True)
    before = {field: _plain(getattr(tier, field)) for field in changes}
    for field, value in changes.items():
        if field in ("cost_per_hour", "cost_per_minute") and value is not None:
            value = Decimal(str(value))
        setattr(tier, field, value)
    audit.record(
        session,
        actor=actor,
        action="tier.update",
        target=tier.id,
        before=before,
        after={field: _plain(getattr(tier, field)) for field in changes},
    )
    tier.version += 1
    tier.updated_at = utcnow()
    tier.updated_by = actor
    session.add(tier)
    session.flush()
    notify(session, ALL_CONFIGS_TOPIC)
    return tier


def _plain(value: object) -> object:
    return float(value) if isinstance(value, Decimal) else value


def list_voices(session: Session, provider: str | None = None) -> Sequence[Voice]:
    query = select(Voice).order_by(col(Voice.provider), col(Voice.sort_order), col(Voice.name))
    if provider is not None:
        query = query.where(Voice.provider == provider.lower())
    return session.exec(query).all()


def voice_names(session: Session, provider: str) -> list[str]:
    return [v.name for v in list_voices(session, provider)]


def get_voice_map(session: Session, target_provider: str) -> tuple[VoiceMap, dict[str, str]]:
    voice_map = session.get(VoiceMap, target_provider.lower())
    if voice_map is None:
        raise NotFoundError(
            f"No voice map for provider '{target_provider}'.", code="voice_map_not_found"
        )
    entries = session.exec(
        select(VoiceMapEntry)
        .where(VoiceMapEntry.target_provider == voice_map.target_provider)
        .order_by(col(VoiceMapEntry.source_voice))
    ).all()
    return voice_map, {e.source_voice: e.target_voice for e in entries}


def _canonical(name: str, names: Sequence[str]) -> str | None:
    lowered = name.strip().lower()
    return next((n for n in names if n.lower() == lowered), None)


def put_voice_map(
    session: Session, target_provider: str, body: VoiceMapWrite, *, actor: str
) -> tuple[VoiceMap, dict[str, str]]:
    target_provider = target_provider.lower()
    targets = voice_names(session, target_provider)
    if not targets:
        raise NotFoundError(
            f"Provider '{target_provider}' has no voices in the catalogue.",
            code="provider_not_found",
        )
    default_voice = _canonical(body.default_voice, targets)
    if default_voice is None:
        raise InvalidInputError(
            f"Default voice '{body.default_voice}' is not a {target_provider} voice "
            f"({', '.join(targets)}).",
            code="invalid_voice",
        )
    entries: dict[str, str] = {}
    for source, target in body.entries.items():
        canonical_target = _canonical(target, targets)
        if canonical_target is None:
            raise InvalidInputError(
                f"Voice map entry '{source}' → '{target}': '{target}' is not a {target_provider} "
                f"voice ({', '.join(targets)}).",
                code="invalid_voice",
            )
        entries[source.strip().lower()] = canonical_target

    voice_map = session.get(VoiceMap, target_provider)
    before = None
    if voice_map is not None:
        before = {
            "default_voice": voice_map.default_voice,
            "entries": get_voice_map(session, target_provider)[1],
        }
    else:
        voice_map = VoiceMap(
            target_provider=target_provider,
            source_provider=body.source_provider.lower(),
            default_voice=default_voice,
            version=0,
        )
    voice_map.source_provider = body.source_provider.lower()
    voice_map.default_voice = default_voice
    voice_map.version += 1
    voice_map.updated_at = utcnow()
    voice_map.updated_by = actor
    session.add(voice_map)
    session.flush()
    for old in session.exec(
        select(VoiceMapEntry).where(VoiceMapEntry.target_provider == target_provider)
    ):
        session.delete(old)
    session.flush()
    for source, target in entries.items():
        session.add(
            VoiceMapEntry(target_provider=target_provider, source_voice=source, target_voice=target)
        )
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="voice_map.update",
        target=target_provider,
        before=before,
        after={"default_voice": default_voice, "entries": entries},
    )
    notify(session, ALL_CONFIGS_TOPIC)
    return voice_map, entries


def resolve_voice(session: Session, target_provider: str, requested: str) -> VoiceResolution:
    """Map any voice name to one the target provider speaks (case-insensitive).

    A target voice passes through; a mapped source voice becomes its target; anything else is
    the map's default.
    """
    voice_map, entries = get_voice_map(session, target_provider)
    return map_voice(
        voice_map.target_provider,
        voice_names(session, voice_map.target_provider),
        entries,
        voice_map.default_voice,
        requested,
    )


def map_voice(
    target_provider: str,
    target_voices: Sequence[str],
    entries: dict[str, str],
    default_voice: str,
    requested: str,
) -> VoiceResolution:
    canonical = _canonical(requested, target_voices)
    if canonical is not None:
        return VoiceResolution(
            target_provider=target_provider,
            requested=requested,
            voice=canonical,
            matched="target_voice",
        )
    mapped = entries.get(requested.strip().lower())
    if mapped is not None:
        return VoiceResolution(
            target_provider=target_provider, requested=requested, voice=mapped, matched="map_entry"
        )
    return VoiceResolution(
        target_provider=target_provider, requested=requested, voice=default_voice, matched="default"
    )


def validate_voice_for_tier(session: Session, tier: Tier, requested: str | None) -> str:
    """Return the voice to store for an agent on this tier, or raise a clear 422.

    A tier speaks its own provider's voices; where a voice map targets that provider, the map's
    source voices (OpenAI names for Grok) are accepted too and mapped when a call starts.
    """
    own = voice_names(session, tier.voice_provider)
    if requested is None:
        default = next(
            (v.name for v in list_voices(session, tier.voice_provider) if v.is_default), None
        )
        if default is None:
            raise InvalidInputError(
                f"Tier '{tier.id}' has no default voice; choose one.", code="invalid_voice"
            )
        return default
    canonical = _canonical(requested, own)
    if canonical is not None:
        return canonical
    voice_map = session.get(VoiceMap, tier.voice_provider)
    if voice_map is not None:
        source = _canonical(requested, voice_names(session, voice_map.source_provider))
        if source is not None:
            return source
    accepted = ", ".join(own)
    also = f", or a {voice_map.source_provider} voice name (mapped)" if voice_map else ""
    raise InvalidInputError(
        f"Voice '{requested}' is not available for tier '{tier.id}'. Use one of {accepted}{also}.",
        code="invalid_voice",
    )
