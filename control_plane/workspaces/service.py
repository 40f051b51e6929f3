"""Workspaces, their settings and their agents.

Isolation lives here, not only in the routes: every function that touches a workspace takes the
caller and answers "not found" for a workspace the caller may not see, so nothing leaks existence.
"""

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import bindparam, func
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from control_plane.auth.principal import Principal
from control_plane.catalogue import service as catalogue
from control_plane.catalogue.models import Tier, VoiceMap
from control_plane.changes import notify
from control_plane.core import new_id, utcnow
from control_plane.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from control_plane.insights import service as insights
from control_plane.pagination import MAX_LIMIT, page
from control_plane.settings import Settings
from control_plane.workspaces.models import (
    Agent,
    AgentConfig,
    AgentCreate,
    AgentPatch,
    AgentRead,
    BuiltinTools,
    FunctionTool,
    Workspace,
    WorkspaceCreate,
    WorkspaceSettings,
    WorkspaceSettingsPatch,
)

if TYPE_CHECKING:
    from control_plane.catalogue.snapshot import CatalogueData
    from control_plane.rollout.gate import FlagGate


def config_topic(workspace_id: str) -> str:
    """The change topic for anything that alters this workspace's session configs."""
    return f"config:{workspace_id}"


def _workspace_not_found(workspace_id: str) -> NotFoundError:
    return NotFoundError(f"Workspace '{workspace_id}' not found.", code="workspace_not_found")


def get_workspace(session: Session, principal: Principal, workspace_id: str) -> Workspace:
    if not principal.can_access_workspace(workspace_id):
        raise _workspace_not_found(workspace_id)
    workspace = session.get(Workspace, workspace_id)
    if workspace is None:
        raise _workspace_not_found(workspace_id)
    return workspace


def list_workspaces(
    session: Session, principal: Principal, limit: int = MAX_LIMIT, cursor: str | None = None
) -> tuple[list[Workspace], str | None]:
    query = select(Workspace)
    if not principal.is_admin:
        query = query.where(col(Workspace.id).in_(principal.workspace_ids))
    order = [col(Workspace.created_at), col(Workspace.id)]
    return page(session, query, order, [datetime, str], limit, cursor)


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
    return slug if len(slug) >= 3 else "ws"


def create_workspace(session: Session, principal: Principal, body: WorkspaceCreate) -> Workspace:
    if not principal.is_admin:
        raise ForbiddenError("Only admins can create workspaces.", code="admin_required")
    workspace_id = body.id or f"{_slug(body.name)}-{new_id('')[1:7]}"
    if session.get(Workspace, workspace_id) is not None:
        raise ConflictError(f"Workspace '{workspace_id}' already exists.", code="workspace_exists")
    workspace = Workspace(id=workspace_id, name=body.name)
    session.add(workspace)
    session.add(WorkspaceSettings(workspace_id=workspace_id))
    try:
        session.flush()
    except IntegrityError as exc:
        raise ConflictError(
            f"Workspace '{workspace_id}' already exists.", code="workspace_exists"
        ) from exc
    return workspace


def bump_workspace_revision(session: Session, workspace: Workspace) -> None:
    workspace.revision += 1
    session.add(workspace)


def get_settings(session: Session, principal: Principal, workspace_id: str) -> WorkspaceSettings:
    get_workspace(session, principal, workspace_id)
    settings = session.get(WorkspaceSettings, workspace_id)
    if settings is None:
        settings = WorkspaceSettings(workspace_id=workspace_id)
        session.add(settings)
        session.flush()
    return settings


def update_settings(
    session: Session, principal: Principal, workspace_id: str, patch: WorkspaceSettingsPatch
) -> WorkspaceSettings:
    settings = get_settings(session, principal, workspace_id)
    changes = patch.model_dump(exclude_unset=True)
    if changes.get("default_tier_id") is not None:
        catalogue.get_tier(session, changes["default_tier_id"])
    if "max_concurrent_calls" in changes and not principal.is_admin:
        raise ForbiddenError("Only admins change a workspace's call limit.", code="admin_required")
    if changes.get("keep_transcripts") is False and settings.keep_transcripts:
        insights.purge_transcripts(session, workspace_id=workspace_id)  # opting out forgets
    retention = changes.get("transcript_retention_days")
    if retention is not None and retention != settings.transcript_retention_days:
        insights.apply_retention(session, workspace_id, retention)  # kept ones follow it too
    for field, value in changes.items():
        setattr(settings, field, value)
    settings.updated_at = utcnow()
    session.add(settings)
    bump_workspace_revision(session, get_workspace(session, principal, workspace_id))
    session.flush()
    notify(session, config_topic(workspace_id))
    return settings


# --- agents --------------------------------------------------------------------------------


def validate_agent_config(session: Session, config: AgentConfig) -> str:
    """Check tier and voice together; return the voice to store. Raises a clear 422."""
    tier = session.get(Tier, config.pricing_tier)
    if tier is None:
        known = ", ".join(t.id for t in catalogue.list_tiers(session))
        raise InvalidInputError(
            f"Pricing tier '{config.pricing_tier}' does not exist. Known tiers: {known}.",
            code="invalid_tier",
        )
    return catalogue.validate_voice_for_tier(session, tier, config.voice)


def get_agent(session: Session, principal: Principal, workspace_id: str, agent_id: str) -> Agent:
    get_workspace(session, principal, workspace_id)
    agent = session.get(Agent, agent_id)
    if agent is None or agent.workspace_id != workspace_id:
        raise NotFoundError(
            f"Agent '{agent_id}' not found in workspace '{workspace_id}'.", code="agent_not_found"
        )
    return agent


@dataclass(frozen=True)
class AgentSnapshot:
    """An agent as a call sees it, with its version and its workspace's config revision."""

    agent_id: str
    config: AgentConfig
    version: int
    workspace_revision: int
    keep_transcripts: bool = False


_SETTINGS = WorkspaceSettings.__table__  # type: ignore[attr-defined]
_AGENTS = Agent.__table__  # type: ignore[attr-defined]
_WORKSPACES = Workspace.__table__  # type: ignore[attr-defined]
# The columns a config is built from, no more: each column is work for the driver on every read.
_AGENT_CONFIG_COLUMNS = [
    _AGENTS.c[name]
    for name in (
        *("id", "version", "name", "pricing_tier", "voice", "instructions", "language"),
        *("turn_detection_threshold", "tools", "builtin_tools"),
    )
]
_AGENT_WITH_REVISION = (
    sa_select(*_AGENT_CONFIG_COLUMNS, _WORKSPACES.c.revision, _SETTINGS.c.keep_transcripts)
    .join(_WORKSPACES, _WORKSPACES.c.id == _AGENTS.c.workspace_id)
    .outerjoin(_SETTINGS, _SETTINGS.c.workspace_id == _AGENTS.c.workspace_id)
    .where(_AGENTS.c.id == bindparam("agent_id"))
    .where(_AGENTS.c.workspace_id == bindparam("workspace_id"))
)


def agent_snapshot(
    session: Session, principal: Principal, workspace_id: str, agent_id: str
) -> AgentSnapshot:
    """One Core query, no ORM bookkeeping: this is on the session-config hot path."""
    if not principal.can_access_workspace(workspace_id):
        raise _workspace_not_found(workspace_id)
    row = (
        session.connection()
        .execute(_AGENT_WITH_REVISION, {"agent_id": agent_id, "workspace_id": workspace_id})
        .mappings()
        .first()
    )
    if row is None:
        get_workspace(session, principal, workspace_id)
        raise NotFoundError(
            f"Agent '{agent_id}' not found in workspace '{workspace_id}'.", code="agent_not_found"
        )
    config = AgentConfig(
        name=row["name"],
        pricing_tier=row["pricing_tier"],
        voice=row["voice"],
        instructions=row["instructions"],
        language=row["language"],
        turn_detection_threshold=row["turn_detection_threshold"],
        tools=row["tools"],
        builtin_tools=row["builtin_tools"],
    )
    return AgentSnapshot(
        row["id"], config, row["version"], row["revision"], bool(row["keep_transcripts"])
    )


def list_agents(
    session: Session,
    principal: Principal,
    workspace_id: str,
    limit: int = MAX_LIMIT,
    cursor: str | None = None,
) -> tuple[list[Agent], str | None]:
    """One page of the workspace's agents, oldest first; the cursor of the next page or None."""
    get_workspace(session, principal, workspace_id)
    query = select(Agent).where(Agent.workspace_id == workspace_id)
    order = [col(Agent.created_at), col(Agent.id)]
    return page(session, query, order, [datetime, str], limit, cursor)


@dataclass(frozen=True)
class AgentLimits:
    """Per-workspace quotas (SWITCHBOARD_MAX_AGENTS_PER_WORKSPACE, _MAX_AGENT_CONFIG_BYTES)."""

    max_agents: int = 500
    max_config_bytes: int = 65_536
    max_tools: int = 32


def agent_limits(settings: Settings) -> AgentLimits:
    return AgentLimits(
        settings.max_agents_per_workspace,
        settings.max_agent_config_bytes,
        settings.max_tools_per_agent,
    )


def _check_size(config: AgentConfig, limits: AgentLimits) -> None:
    if len(config.tools) > limits.max_tools:
        raise InvalidInputError(
            f"An agent may have {limits.max_tools} tools; this one has {len(config.tools)}. "
            "Nothing was stored.",
            code="too_many_tools",
        )
    size = len(
        json.dumps(
            {
                "instructions": config.instructions,
                "tools": [t.model_dump() for t in config.tools],
                "builtin_tools": config.builtin_tools.model_dump(),
            },
            separators=(",", ":"),
        ).encode()
    )
    if size > limits.max_config_bytes:
        raise InvalidInputError(
            f"Instructions and tools come to {size} bytes as JSON; the limit is "
            f"{limits.max_config_bytes}. Nothing was stored.",
            code="agent_too_large",
        )


def _check_tier_enabled(
    session: Session, gate: "FlagGate | None", workspace_id: str, tier_id: str
) -> None:
    """An agent may be put on a tier only while the workspace may use it (the catalogue's
    rule). `gate` None skips the check: seeding and demo data, never a caller's request."""
    tier = session.get(Tier, tier_id) if gate is not None else None
    if gate is None or tier is None:  # an unknown tier is the validation's to refuse
        return
    availability = catalogue.tier_availability(gate, tier, workspace_id)
    if not availability.available:
        raise catalogue.TierNotEnabledError(
            f"{availability.reason} Pick another tier; nothing was stored.",
            code=availability.code,
            extra={"tier": tier.id},
        )


def create_agent(
    session: Session,
    principal: Principal,
    workspace_id: str,
    body: AgentCreate,
    limits: AgentLimits = AgentLimits(),
    *,
    gate: "FlagGate | None",
) -> Agent:
    get_workspace(session, principal, workspace_id)
    _check_size(body, limits)
    _check_tier_enabled(session, gate, workspace_id, body.pricing_tier)
    count = session.exec(
        select(func.count()).select_from(Agent).where(Agent.workspace_id == workspace_id)
    ).one()
    if count >= limits.max_agents:
        raise ConflictError(
            f"Workspace '{workspace_id}' has {count} agents, its limit. Delete one first.",
            code="agent_quota_exceeded",
        )
    voice = validate_agent_config(session, body)
    agent = Agent(
        id=new_id("agt"),
        workspace_id=workspace_id,
        name=body.name,
        pricing_tier=body.pricing_tier,
        created_tier=body.pricing_tier,
        voice=voice,
        instructions=body.instructions,
        language=body.language,
        turn_detection_threshold=body.turn_detection_threshold,
        tools=[t.model_dump() for t in body.tools],
        builtin_tools=body.builtin_tools.model_dump(),
    )
    session.add(agent)
    session.flush()
    notify(session, config_topic(workspace_id))
    return agent


def _merged_config(agent: Agent, changes: dict[str, Any]) -> AgentConfig:
    """The agent as it will be after the patch, checked as a whole (the patch alone is valid,
    but a stored agent from before a rule was tightened may not be)."""
    try:
        return AgentConfig.model_validate(
            {
                "name": agent.name,
                "pricing_tier": agent.pricing_tier,
                "voice": agent.voice,
                "instructions": agent.instructions,
                "language": agent.language,
                "turn_detection_threshold": agent.turn_detection_threshold,
                "tools": agent.tools,
                "builtin_tools": agent.builtin_tools,
            }
            | changes
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInputError(
            f"The agent would not be valid after this change: {problems}", code="invalid_agent"
        ) from None


def update_agent(
    session: Session,
    principal: Principal,
    workspace_id: str,
    agent_id: str,
    patch: AgentPatch,
    limits: AgentLimits = AgentLimits(),
    *,
    gate: "FlagGate | None",
) -> Agent:
    agent = get_agent(session, principal, workspace_id, agent_id)
    changes = patch.model_dump(exclude_unset=True)
    merged = _merged_config(agent, changes)
    _check_size(merged, limits)
    if merged.pricing_tier != agent.pricing_tier:  # staying on a tier is always allowed
        _check_tier_enabled(session, gate, workspace_id, merged.pricing_tier)
    voice = validate_agent_config(session, merged)
    agent.name = merged.name
    agent.pricing_tier = merged.pricing_tier
    agent.voice = voice
    agent.instructions = merged.instructions
    agent.language = merged.language
    agent.turn_detection_threshold = merged.turn_detection_threshold
    agent.tools = [t.model_dump() for t in merged.tools]
    agent.builtin_tools = merged.builtin_tools.model_dump()
    agent.version += 1
    agent.updated_at = utcnow()
    session.add(agent)
    session.flush()
    notify(session, config_topic(workspace_id))
    return agent


def delete_agent(session: Session, principal: Principal, workspace_id: str, agent_id: str) -> None:
    agent = get_agent(session, principal, workspace_id, agent_id)
    session.delete(agent)
    session.flush()
    notify(session, config_topic(workspace_id))


def resolved_voice(session: Session, tier_id: str, voice: str) -> str:
    """The voice a call on this tier will speak with (OpenAI names are mapped for Grok)."""
    tier = catalogue.get_tier(session, tier_id)
    if session.get(VoiceMap, tier.voice_provider) is None:
        return voice
    return catalogue.resolve_voice(session, tier.voice_provider, voice).voice


def agent_read(
    session: Session, agent: Agent, catalogue: "CatalogueData | None" = None
) -> AgentRead:
    """The agent as the API shows it. With the in-memory catalogue (lists), resolving its voice
    costs no query; without, three."""
    if catalogue is not None:
        spoken = catalogue.speak(catalogue.tier(agent.pricing_tier), agent.voice)
        voice = spoken.voice if spoken is not None else agent.voice
    else:
        voice = resolved_voice(session, agent.pricing_tier, agent.voice)
    return AgentRead(
        id=agent.id,
        workspace_id=agent.workspace_id,
        name=agent.name,
        pricing_tier=agent.pricing_tier,
        voice=agent.voice,
        resolved_voice=voice,
        instructions=agent.instructions,
        language=agent.language,
        turn_detection_threshold=agent.turn_detection_threshold,
        tools=[FunctionTool.model_validate(t) for t in agent.tools],
        builtin_tools=BuiltinTools.model_validate(agent.builtin_tools),
        version=agent.version,
        created_at=agent.created_at,
        updated_at=agent.updated_at,
    )
