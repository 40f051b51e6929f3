"""The resolver: agent + tier + voice map + flag + key → one resolved session config.

No fallback: if the tier's engine cannot run this call (flag off, key missing), the answer is a
clear error, never a config for a different engine.
"""

from dataclasses import dataclass

from sqlmodel import Session

from control_plane.auth.principal import Principal
from control_plane.catalogue import service as catalogue_service
from control_plane.catalogue.models import Tier
from control_plane.catalogue.snapshot import CatalogueData, CatalogueSnapshot
from control_plane.errors import ForbiddenError, ProblemError
from control_plane.keys import service as keys
from control_plane.keys.crypto import Keyring
from control_plane.rollout.gate import FlagGate
from control_plane.sessions.cache import (
    CachedConfig,
    CacheKey,
    ConfigBasis,
    ConfigCache,
    ConfigParts,
)
from control_plane.sessions.engines import ENGINES
from control_plane.sessions.ephemeral import EphemeralSecrets
from control_plane.sessions.models import (
    AudioChannel,
    AudioConfig,
    AudioDirection,
    AudioFormat,
    Credentials,
    CredentialsMode,
    ProviderInfo,
    ResolvedSessionConfig,
    SessionSettings,
    TierSummary,
    TurnDetection,
)
from control_plane.settings import Settings
from control_plane.workspaces import service as workspaces
from control_plane.workspaces.models import AgentConfig, WorkspaceSettings
from control_plane.workspaces.service import AgentSnapshot

DEFAULT_VAD_THRESHOLD = 0.7
XAI_KEY_MISSING = (
    "xAI API key not configured for this workspace. Please add it in Settings > Workspace API Keys."
)

LANGUAGES = {
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "ja": "Japanese",
    "ko": "Korean",
    "zh": "Chinese",
    "hi": "Hindi",
    "ar": "Arabic",
    "ru": "Russian",
    "pl": "Polish",
    "tr": "Turkish",
    "sv": "Swedish",
}


class KeyMissingError(ProblemError):
    status = 409
    code = "xai_api_key_missing"
    title = "API key missing"


class EngineUnknownError(ProblemError):
    status = 500
    code = "engine_unknown"
    title = "Engine not configured"


def instructions_with_language(instructions: str, language: str) -> str:
    name = LANGUAGES.get(language.split("-")[0].lower(), language)
    line = f"Always speak {name} ({language}) with the caller unless they ask for another language."
    return f"{instructions.rstrip()}\n\n{line}" if instructions.strip() else line


def config_version(
    data: CatalogueData, gate: FlagGate, tier: Tier, workspace_revision: int, agent_version: str
) -> str:
    """Every write that can change this config bumps one of these parts: tier, voice map, flag
    (stage, cohorts, kill), workspace (keys, settings), agent."""
    voice_map = data.voice_maps.get(tier.voice_provider)
    return ".".join(
        str(part)
        for part in (
            tier.version,
            voice_map.version if voice_map else 0,
            gate.version_of(tier.flag_name) if tier.flag_name else 0,
            workspace_revision,
            agent_version,
        )
    )


@dataclass(frozen=True)
class Resolver:
    """What resolving needs beyond the database session: one per process."""

    settings: Settings
    keyring: Keyring
    gate: FlagGate
    secrets: EphemeralSecrets
    catalogue: CatalogueSnapshot
    parts: ConfigParts

    def still_holds(self, basis: ConfigBasis) -> bool:
        """Would a config built now on the same agent and key have this basis? Only from what
        is in memory; False when the catalogue must be loaded first (the route will)."""
        data = self.catalogue.current
        tier = data.tiers.get(basis.tier_id) if data is not None else None
        if data is None or tier is None or tier.version != basis.tier_version:
            return False
        voice_map = data.voice_maps.get(tier.voice_provider)
        if (voice_map.version if voice_map else 0) != basis.voice_map_version:
            return False
        if not tier.flag_name:
            return basis.decision is None
        if self.gate.version_of(tier.flag_name) != basis.flag_version:
            return False
        # Same definition, but in scale mode the SDK may only now hold it: decide again.
        availability = catalogue_service.tier_availability(self.gate, tier, basis.workspace_id)
        return availability.available and availability.decision == basis.decision


def resolve_agent(
    session: Session,
    resolver: Resolver,
    principal: Principal,
    workspace_id: str,
    agent_id: str,
    credentials: CredentialsMode = "key",
    channel: AudioChannel = "phone",
) -> tuple[ResolvedSessionConfig, ConfigBasis]:
    """The config for a stored agent, with the audio formats of the channel its call uses, and
    what of the catalogue and flags it was built from (for the cache)."""
    reader = _service_reader(principal, workspace_id)
    agent = resolver.parts.agent(workspace_id, agent_id)
    if agent is None:
        stamp = resolver.parts.generations.workspace(workspace_id)
        agent = workspaces.agent_snapshot(session, reader, workspace_id, agent_id)
        resolver.parts.keep_agent(agent, workspace_id, stamp)
    return _resolve_stored(session, resolver, workspace_id, agent, credentials, channel)


def _resolve_stored(
    session: Session | None,
    resolver: Resolver,
    workspace_id: str,
    agent: AgentSnapshot,
    credentials: CredentialsMode,
    channel: AudioChannel,
) -> tuple[ResolvedSessionConfig, ConfigBasis]:
    return _resolve(
        session,
        resolver,
        workspace_id,
        agent.workspace_revision,
        agent.config,
        agent.config.voice or "",
        agent.agent_id,
        str(agent.version),
        credentials,
        channel,
        agent.keep_transcripts,
    )


def resolve_inline(
    session: Session,
    resolver: Resolver,
    principal: Principal,
    workspace_id: str,
    config: AgentConfig,
    credentials: CredentialsMode = "key",
) -> ResolvedSessionConfig:
    """The config for an agent the backend owns, validated like agent creation."""
    reader = _service_reader(principal, workspace_id)
    workspace = workspaces.get_workspace(session, reader, workspace_id)
    voice = workspaces.validate_agent_config(session, config)
    settings = session.get(WorkspaceSettings, workspace_id)
    return _resolve(
        session,
        resolver,
        workspace_id,
        workspace.revision,
        config,
        voice,
        None,
        "inline",
        credentials,
        keep_transcripts=bool(settings and settings.keep_transcripts),
    )[0]


def require_service(principal: Principal) -> None:
    if not principal.is_service:
        raise ForbiddenError("Session configs are for service tokens.", code="service_required")


def _service_reader(principal: Principal, workspace_id: str) -> Principal:
    """Service tokens run calls for every workspace; nobody else may resolve configs."""
    require_service(principal)
    return Principal(
        name=principal.name,
        scopes=principal.scopes | {f"workspace:{workspace_id}"},
        token_id=principal.token_id,
    )


class NotInMemory(Exception):
    """A part of the config must be read from the database first."""


def rebuild_in_memory(resolver: Resolver, cache: ConfigCache, key: CacheKey) -> CachedConfig | None:
    """For the fast path's misses: the config rebuilt from kept parts alone (no database, no
    xAI) and kept. None when a part is not in memory, the call asks for an ephemeral secret, or
    the answer is a refusal: the route builds those, and explains them."""
    workspace_id, agent_id, credentials, channel = key
    if credentials not in ("key", "none") or channel not in ("phone", "browser"):
        return None
    stamp = cache.stamp(key)
    agent = resolver.parts.agent(workspace_id, agent_id)
    if agent is None:
        return None
    try:
        config, basis = _resolve_stored(
            None,
            resolver,
            workspace_id,
            agent,
            credentials,  # type: ignore[arg-type]
            channel,  # type: ignore[arg-type]
        )
    except (NotInMemory, ProblemError):
        return None
    return cache.put(key, config, stamp, basis)


def _catalogue(session: Session | None, resolver: Resolver) -> CatalogueData:
    if session is not None:
        return resolver.catalogue.get(session)
    data = resolver.catalogue.current
    if data is None:
        raise NotInMemory
    return data


def _workspace_key(
    session: Session | None, resolver: Resolver, workspace_id: str, provider: str
) -> str | None:
    known, key = resolver.parts.key(workspace_id, provider)
    if not known:
        if session is None:
            raise NotInMemory
        stamp = resolver.parts.generations.workspace(workspace_id)
        key = keys.reveal_key(session, resolver.keyring, workspace_id, provider)
        resolver.parts.keep_key(workspace_id, provider, key, stamp)
    return key


def _resolve(
    session: Session | None,
    resolver: Resolver,
    workspace_id: str,
    workspace_revision: int,
    config: AgentConfig,
    voice: str,
    agent_id: str | None,
    agent_version: str,
    credentials: CredentialsMode,
    channel: AudioChannel = "phone",
    keep_transcripts: bool = False,
) -> tuple[ResolvedSessionConfig, ConfigBasis]:
    """Session None: from memory only (NotInMemory when something must be read)."""
    settings, gate, data = resolver.settings, resolver.gate, _catalogue(session, resolver)
    tier = data.tier(config.pricing_tier)
    profile = ENGINES.get(tier.engine)
    if profile is None:
        raise EngineUnknownError(
            f"Tier '{tier.id}' names engine '{tier.engine}', which this Switchboard does not know."
        )

    availability = catalogue_service.tier_availability(gate, tier, workspace_id)
    decision = availability.decision
    if not availability.available:
        raise catalogue_service.TierNotEnabledError(
            availability.reason or "",
            code=availability.code,
            extra={"tier": tier.id, "flag": tier.flag_name, "stage": decision and decision.stage},
        )

    key = None
    if profile.key_provider is not None:
        key = _workspace_key(session, resolver, workspace_id, profile.key_provider)
    if key is None and profile.key_required:
        raise KeyMissingError(
            XAI_KEY_MISSING, extra={"tier": tier.id, "provider": profile.key_provider}
        )
    creds = None
    if key is not None and credentials == "ephemeral" and profile.supports_ephemeral:
        secret = resolver.secrets.get(workspace_id, key)
        creds = Credentials(
            type="ephemeral",
            provider=profile.provider,
            value=secret.value,
            expires_at=secret.expires_at,
        )
    elif key is not None and credentials != "none":
        creds = Credentials(type="api_key", provider=profile.provider, value=key)

    audio = (
        AudioFormat(type=profile.browser_audio, rate=profile.browser_rate)
        if channel == "browser"
        else AudioFormat(type=profile.telephony_audio)
    )
    voice_map = data.voice_maps.get(tier.voice_provider)
    basis = ConfigBasis(
        workspace_id=workspace_id,
        tier_id=tier.id,
        tier_version=tier.version,
        voice_map_version=voice_map.version if voice_map else 0,
        flag_version=gate.version_of(tier.flag_name) if tier.flag_name else 0,
        decision=decision,
    )
    resolved = ResolvedSessionConfig(
        config_version=config_version(data, gate, tier, workspace_revision, agent_version),
        workspace_id=workspace_id,
        agent_id=agent_id,
        agent_name=config.name,
        tier=TierSummary(id=tier.id, name=tier.name, engine=tier.engine),
        engine=tier.engine,
        provider=ProviderInfo(
            name=profile.provider,
            model=tier.llm_model,
            realtime_url=profile.realtime_url(settings),
            stt=f"{tier.stt_provider}:{tier.stt_model}" if tier.stt_model else tier.stt_provider,
            tts=f"{tier.tts_provider}:{tier.tts_model}" if tier.tts_model else tier.tts_provider,
            telephony=tier.telephony_provider,
        ),
        session=SessionSettings(
            voice=spoken.voice if (spoken := data.speak(tier, voice)) else voice,
            requested_voice=voice,
            instructions=instructions_with_language(config.instructions, config.language),
            language=config.language,
            turn_detection=TurnDetection(
                threshold=config.turn_detection_threshold
                if config.turn_detection_threshold is not None
                else DEFAULT_VAD_THRESHOLD
            ),
            tools=profile.convert_tools(config.tools, config.builtin_tools),
            audio=AudioConfig(
                input=AudioDirection(format=audio), output=AudioDirection(format=audio)
            ),
        ),
        credentials=creds,
        flag=decision,
        keep_transcripts=keep_transcripts,
    )
    return resolved, basis
