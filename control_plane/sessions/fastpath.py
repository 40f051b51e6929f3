"""The hot reads, answered before the framework runs when the answer is already known:

- GET /api/v1/workspaces/{w}/agents/{a}/session-config with a recently verified service token
  and a current cached config, or one it can rebuild from kept parts without the database;
- GET /api/client/features with a configured client token (or a verified admin/service token);
- the catalogue the frontend reads (GET /api/v1/tiers, /tiers/{id}, /voices, /voice-maps/{p}),
  anonymous or with a recently verified token, when that variant is built and current;
- a page of a workspace's agents already built, for a recently verified token that may see it.

Everything else, including every miss, goes on to the FastAPI routes, which build and cache the
answers, so both paths always agree.

The lane sits in front of every layer of the app (`SwitchboardApp`): a hot read costs ~5 µs
here against ~17 µs through the framework's and our middleware. So it does itself what those
layers would do for it: the request limits (`RequestLimits.refuses`: headers too large, NUL in
the target), the security headers (on every `Served`), the request metrics. What it does not do
it leaves to them: a request with a body, or with an `Origin` while CORS is on, goes the long way.

Under `switchboard serve` (uvicorn with `serving.GuardedHttpProtocol`) the lane's `answer_now`
runs even earlier: the HTTP server calls it as a request's headers complete and writes the
answer itself, without an ASGI task or messages (~35 % more cached reads per core).
"""

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from control_plane.auth.bearer import bearer_token, client_token
from control_plane.auth.cache import TokenCache
from control_plane.auth.principal import Principal
from control_plane.auth.service import hash_token
from control_plane.catalogue.reads import CatalogueReads, ReadKey, workspace_context
from control_plane.errors import NotFoundError
from control_plane.middleware import RequestLimits
from control_plane.pagination import DEFAULT_LIMIT, MAX_LIMIT
from control_plane.rollout.gate import FlagGate
from control_plane.served import Served, send_answer
from control_plane.sessions.cache import CachedConfig, CacheKey, ConfigCache
from control_plane.telemetry.metrics import Metrics
from control_plane.workspaces.cache import AgentPages
from switchboard_runtime.worker.serving import InstantAnswer

SESSION_CONFIG = re.compile(r"^/api/v1/workspaces/([^/]+)/agents/([^/]+)/session-config$")
CLIENT_FEATURES = "/api/client/features"
CATALOGUE_PREFIX = "/api/v1/"
AGENTS = re.compile(r"^/api/v1/workspaces/([^/]+)/agents$")
TIER = re.compile(r"^/api/v1/tiers(?:/([^/]+))?$")
VOICE_MAP = re.compile(r"^/api/v1/voice-maps/([^/]+)$")
logger = logging.getLogger(__name__)

CREDENTIAL_MODES = {"key", "ephemeral", "none"}
AUDIO_CHANNELS = {"phone", "browser"}
# The route each hot read answers for, as the request metrics label it.
SESSION_CONFIG_ROUTE = "/api/v1/workspaces/{workspace_id}/agents/{agent_id}/session-config"
AGENTS_ROUTE = "/api/v1/workspaces/{workspace_id}/agents"
CATALOGUE_ROUTES = {
    "tiers": "/api/v1/tiers",
    "tier": "/api/v1/tiers/{tier_id}",
    "voices": "/api/v1/voices",
    "voice-map": "/api/v1/voice-maps/{provider}",
}
# A kept answer found for a request, and the route it answers for (the request metrics' label).
Found = tuple[str, Served]


class HotReads:
    """The hot reads' lane, in front of `app` (the whole FastAPI app, middleware and all)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: RequestLimits,
        cors: bool,
        metrics: Metrics,
        config_cache: ConfigCache,
        token_cache: TokenCache,
        gate: FlagGate,
        client_tokens: list[bytes],
        catalogue_reads: CatalogueReads,
        agent_pages: AgentPages,
        rebuild_config: Callable[[CacheKey], CachedConfig | None],
        reverify_token: Callable[[str], None],
    ) -> None:
        self.app = app
        self.limits, self.cors, self.metrics = limits, cors, metrics
        self.rebuild_config = rebuild_config
        self.reverify_token = reverify_token
        self.agent_pages = agent_pages
        self.catalogue_reads = catalogue_reads
        self.config_cache = config_cache
        self.token_cache = token_cache
        self.gate = gate
        self.client_tokens = client_tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = self.answer_now(scope) if scope["type"] == "http" else None
        if answer is None:
            await self.app(scope, receive, send)
        else:
            await send_answer(send, answer)

    def answer_now(self, scope: Scope) -> InstantAnswer | None:
        """The whole answer to this request if it is a hot read already known (counted in the
        request metrics); None leaves it to the app. The HTTP server's `INSTANT_ANSWERS`."""
        if scope["method"] != "GET" or not self._takes(scope):
            return None
        started = time.perf_counter()
        try:
            found = self._find(scope)
        except Exception:  # a fault in a lookup must not cost the request its answer
            logger.exception("hot read of %s failed; the routes answer it", scope["path"][:200])
            return None
        if found is None:
            return None
        route, served = found
        answer = served.answer(self._header(scope, b"if-none-match"))
        self.metrics.observe_request("GET", route, answer.status, time.perf_counter() - started)
        return answer

    def _takes(self, scope: Scope) -> bool:
        """Whether this lane may answer: nothing the layers behind it would refuse or add to."""
        if self.limits.refuses(scope):
            return False
        for name, _ in scope["headers"]:
            if name in (b"content-length", b"transfer-encoding") or (
                name == b"origin" and self.cors
            ):
                return False
        return True

    def _find(self, scope: Scope) -> Found | None:
        """The kept answer this request asks for, and its route; None leaves it to the routes."""
        path: str = scope["path"]
        if path == CLIENT_FEATURES:
            return self._client_features(scope)
        if path.endswith("/session-config"):
            match = SESSION_CONFIG.match(path)
            return self._session_config(scope, match[1], match[2]) if match else None
        if path.endswith("/agents"):
            match = AGENTS.match(path)
            return self._agents(scope, match[1]) if match else None
        if path.startswith(CATALOGUE_PREFIX):
            return self._catalogue(scope, path)
        return None

    def _agents(self, scope: Scope, workspace_id: str) -> Found | None:
        """A page of agents already built, for a recently verified token that may see it."""
        query = scope.get("query_string", b"")
        params = dict(parse_qsl(query.decode("latin-1"))) if query else {}
        limit_text = params.pop("limit", str(DEFAULT_LIMIT))
        cursor = params.pop("cursor", None) or None  # empty: the first page, as the route reads it
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        digits = limit_text.isascii() and limit_text.isdigit()
        if params or not digits or not 1 <= int(limit_text) <= MAX_LIMIT:
            return None
        principal = self._fresh_principal(scope)
        if principal is None or not principal.can_access_workspace(workspace_id):
            return None
        served = self.agent_pages.get((workspace_id, int(limit_text), cursor))
        return None if served is None else (AGENTS_ROUTE, served)

    def _catalogue(self, scope: Scope, path: str) -> Found | None:
        key = self._catalogue_key(scope, path)
        served = self.catalogue_reads.cached(key) if key is not None else None
        if key is None or served is None:
            return None
        return CATALOGUE_ROUTES[key[0]], served

    def _catalogue_key(self, scope: Scope, path: str) -> ReadKey | None:
        """The variant this request asks for, or None when only the route can tell."""
        tier = TIER.match(path)
        voice_map = VOICE_MAP.match(path)
        if tier is None and voice_map is None and path != "/api/v1/voices":
            return None
        query = scope.get("query_string", b"")
        params = dict(parse_qsl(query.decode("latin-1"))) if query else {}
        if voice_map is not None:  # voices and voice maps are the same for everyone
            return None if params else ("voice-map", voice_map[1], None, False)
        if tier is None:
            provider = params.pop("provider", None)
            return None if params else ("voices", provider, None, False)
        workspace_id = params.pop("workspace_id", None)
        if params:
            return None
        principal: Principal | None = None  # anonymous, unless a token is sent
        if self._header(scope, b"authorization") is not None:
            principal = self._fresh_principal(scope)
            if principal is None:
                return None
        try:
            context = workspace_context(principal, workspace_id)
        except NotFoundError:
            return None
        return ("tier" if tier[1] else "tiers", tier[1], context, principal is not None)

    def _fresh_principal(self, scope: Scope) -> Principal | None:
        """The caller of a bearer token verified recently; None sends the request to the routes,
        which verify it (or refuse it) properly."""
        authorization = self._header(scope, b"authorization")
        token = bearer_token(authorization.decode("latin-1")) if authorization else None
        return self._trusted(token) if token else None

    def _trusted(self, token: str) -> Principal | None:
        """The caller of a recently verified token. A busy token due for re-verification is
        looked up again in a worker thread while this request (and the rest) is answered."""
        token_hash = hash_token(token)
        principal = self.token_cache.fresh(token_hash)
        if principal is not None and self.token_cache.claim_reverification(token_hash):
            asyncio.get_running_loop().run_in_executor(None, self.reverify_token, token)
        return principal

    @staticmethod
    def _header(scope: Scope, name: bytes) -> bytes | None:
        for key, value in scope["headers"]:
            if key == name:
                return bytes(value)
        return None

    def _session_config(self, scope: Scope, workspace_id: str, agent_id: str) -> Found | None:
        query = scope.get("query_string", b"")
        credentials, channel = "key", "phone"
        if query:
            params = dict(parse_qsl(query.decode("latin-1")))
            credentials = params.pop("credentials", "key")
            channel = params.pop("channel", "phone")
            if params or credentials not in CREDENTIAL_MODES or channel not in AUDIO_CHANNELS:
                return None
        principal = self._fresh_principal(scope)
        if principal is None or not principal.is_service:
            return None
        key = (workspace_id, agent_id, credentials, channel)
        # After a change, most configs are rebuilt here from kept parts, in ~0.2 ms.
        entry = self.config_cache.get(key) or self.rebuild_config(key)
        return None if entry is None else (SESSION_CONFIG_ROUTE, entry.served)

    def _client_features(self, scope: Scope) -> Found | None:
        authorization = self._header(scope, b"authorization")
        if authorization is None:
            return None
        token = client_token(authorization.decode("latin-1"))
        allowed = any(hmac.compare_digest(token.encode("latin-1"), t) for t in self.client_tokens)
        if not allowed:
            principal = self._trusted(token)
            allowed = principal is not None and (principal.is_admin or principal.is_service)
        if not allowed:
            return None
        return CLIENT_FEATURES, self.gate.client_document
