"""The two hot reads, answered before the framework runs when the answer is already known:

- GET /api/v1/workspaces/{w}/agents/{a}/session-config with a recently verified service token
  and a valid cached config;
- GET /api/client/features with a configured client token (or a verified admin/service token).

Everything else, including every miss, goes on to the FastAPI routes, which build and cache the
answers, so both paths always agree.
"""

import hmac
import re
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from control_plane.auth.cache import TokenCache
from control_plane.auth.service import hash_token
from control_plane.rollout.gate import FlagGate
from control_plane.served import send_served
from control_plane.sessions.cache import ConfigCache

SESSION_CONFIG = re.compile(r"^/api/v1/workspaces/([^/]+)/agents/([^/]+)/session-config$")
CLIENT_FEATURES = "/api/client/features"
CREDENTIAL_MODES = {"key", "ephemeral", "none"}


class HotPathMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        config_cache: ConfigCache,
        token_cache: TokenCache,
        gate: FlagGate,
        client_tokens: list[bytes],
    ) -> None:
        self.app = app
        self.config_cache = config_cache
        self.token_cache = token_cache
        self.gate = gate
        self.client_tokens = client_tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            if path == CLIENT_FEATURES:
                if await self._client_features(scope, send):
                    return
            elif path.endswith("/session-config"):
                match = SESSION_CONFIG.match(path)
                if match and await self._session_config(scope, send, match[1], match[2]):
                    return
        await self.app(scope, receive, send)

    @staticmethod
    def _header(scope: Scope, name: bytes) -> bytes | None:
        for key, value in scope["headers"]:
            if key == name:
                return bytes(value)
        return None

    async def _session_config(
        self, scope: Scope, send: Send, workspace_id: str, agent_id: str
    ) -> bool:
        query = scope.get("query_string", b"")
        credentials = "key"
        if query:
            params = dict(parse_qsl(query.decode("latin-1")))
            credentials = params.pop("credentials", "key")
            if params or credentials not in CREDENTIAL_MODES:
                return False
        authorization = self._header(scope, b"authorization")
        if authorization is None or authorization[:7].lower() != b"bearer ":
            return False
        principal = self.token_cache.fresh(hash_token(authorization[7:].strip().decode("latin-1")))
        if principal is None or not principal.is_service:
            return False
        entry = self.config_cache.get((workspace_id, agent_id, credentials))
        if entry is None:
            return False
        await send_served(send, entry.served, self._header(scope, b"if-none-match"))
        return True

    async def _client_features(self, scope: Scope, send: Send) -> bool:
        authorization = self._header(scope, b"authorization")
        if authorization is None:
            return False
        token = authorization.removeprefix(b"Bearer ").strip()
        allowed = any(hmac.compare_digest(token, t) for t in self.client_tokens)
        if not allowed:
            principal = self.token_cache.fresh(hash_token(token.decode("latin-1")))
            allowed = principal is not None and (principal.is_admin or principal.is_service)
        if not allowed:
            return False
        await send_served(send, self.gate.client_document, self._header(scope, b"if-none-match"))
        return True
