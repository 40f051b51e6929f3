"""REST for resolved session configs (service scope). The cached answer is also served by the
fast path in `fastpath.py`; this route builds, caches and explains every other case."""

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from control_plane.auth.deps import ServiceDep
from control_plane.db import end_read_only
from control_plane.deps import ReadSessionDep, SessionDep
from control_plane.errors import ProblemError
from control_plane.served import served_response
from control_plane.sessions import service
from control_plane.sessions.cache import CachedConfig, ConfigCache
from control_plane.sessions.models import AudioChannel, CredentialsMode, ResolvedSessionConfig
from control_plane.workspaces.models import AgentConfig

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["session config"])

CredentialsQuery = Annotated[
    CredentialsMode,
    Query(
        description="key: the workspace's API key; ephemeral: a short-lived xAI client secret; none"
    ),
]

ChannelQuery = Annotated[
    AudioChannel,
    Query(description="phone: G.711 μ-law 8 kHz both ways; browser: PCM16 24 kHz (test calls)"),
]


def config_response(request: Request, entry: CachedConfig, *, stale: bool = False) -> Response:
    if stale:
        return served_response(request, entry.stale, stale=True)
    return served_response(request, entry.served)


@router.get(
    "/workspaces/{workspace_id}/agents/{agent_id}/session-config",
    response_model=None,
    responses={
        200: {"model": ResolvedSessionConfig},
        403: {"description": "tier_not_enabled / tier_disabled / service_required"},
        404: {"description": "workspace_not_found / agent_not_found"},
        409: {"description": "xai_api_key_missing"},
    },
)
def agent_session_config(
    workspace_id: str,
    agent_id: str,
    request: Request,
    session: ReadSessionDep,
    principal: ServiceDep,
    credentials: CredentialsQuery = "key",
    channel: ChannelQuery = "phone",
) -> Response:
    outcomes = request.app.state.metrics.session_config
    cache: ConfigCache = request.app.state.config_cache
    key = (workspace_id, agent_id, credentials, channel)
    entry = cache.get(key)
    if entry is not None:
        outcomes.labels("ok").inc()
        return config_response(request, entry)
    stamp = cache.stamp(key)
    try:
        config, basis = service.resolve_agent(
            session,
            request.app.state.resolver,
            principal,
            workspace_id,
            agent_id,
            credentials,
            channel,
        )
    except ProblemError as exc:
        outcomes.labels(exc.code).inc()
        raise
    except (OperationalError, PoolTimeoutError):
        last = cache.last_known(key)
        if last is None:
            outcomes.labels("database_unavailable").inc()
            raise
        outcomes.labels("stale").inc()
        end_read_only(session)
        logger.warning(
            "database unreachable: serving last known config for %s/%s", workspace_id, agent_id
        )
        return config_response(request, last, stale=True)
    outcomes.labels("ok").inc()
    return config_response(request, cache.put(key, config, stamp, basis))


@router.post("/workspaces/{workspace_id}/session-config", response_model=ResolvedSessionConfig)
def inline_session_config(
    workspace_id: str,
    body: AgentConfig,
    request: Request,
    response: Response,
    session: SessionDep,
    principal: ServiceDep,
    credentials: CredentialsQuery = "key",
) -> ResolvedSessionConfig:
    response.headers["Cache-Control"] = "no-store"
    return service.resolve_inline(
        session, request.app.state.resolver, principal, workspace_id, body, credentials
    )
