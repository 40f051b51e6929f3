"""Short-lived xAI client secrets, minted server-side with the workspace's key and cached
until shortly before they expire."""

import hashlib
import threading
import time
from dataclasses import dataclass

import httpx

from control_plane.errors import ProblemError
from control_plane.settings import Settings


@dataclass(frozen=True)
class ClientSecret:
    value: str
    expires_at: int


class XAIUnavailableError(ProblemError):
    status = 502
    code = "xai_unavailable"
    title = "Provider unavailable"


class EphemeralSecrets:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._cache: dict[tuple[str, str], ClientSecret] = {}
        self._lock = threading.Lock()

    def _fresh_enough(self, secret: ClientSecret) -> bool:
        # Keep a third of the lifetime (at least 30 s) for the call to connect with it.
        margin = max(30, self._settings.ephemeral_secret_ttl_seconds // 3)
        return secret.expires_at - time.time() > margin

    def get(self, workspace_id: str, api_key: str) -> ClientSecret:
        key_id = hashlib.sha256(api_key.encode()).hexdigest()[:16]
        cache_key = (workspace_id, key_id)
        cached = self._cache.get(cache_key)
        if cached is not None and self._fresh_enough(cached):
            return cached
        secret = self._mint(api_key)
        with self._lock:
            self._cache[cache_key] = secret
        return secret

    def _mint(self, api_key: str) -> ClientSecret:
        url = f"{self._settings.xai_base_url.rstrip('/')}/v1/realtime/client_secrets"
        try:
            response = httpx.post(
                url,
                headers={"Authorization": f"Bearer {api_key}"},
                json={"expires_after": {"seconds": self._settings.ephemeral_secret_ttl_seconds}},
                timeout=self._settings.xai_timeout_seconds,
            )
        except httpx.HTTPError as exc:
            raise XAIUnavailableError(
                f"xAI did not answer the client-secret request ({type(exc).__name__}).",
            ) from exc
        if response.status_code in (401, 403):
            raise ProblemError(
                "xAI rejected this workspace's API key. "
                "Please update it in Settings > Workspace API Keys.",
                status=502,
                code="xai_api_key_rejected",
                title="Provider rejected the key",
            )
        if response.status_code == 429:
            raise ProblemError(
                "xAI is rate-limiting client-secret requests; retry shortly.",
                status=503,
                code="xai_rate_limited",
                title="Provider rate limit",
                headers={"Retry-After": response.headers.get("retry-after", "1")[:8]},
            )
        if response.status_code >= 400:
            raise XAIUnavailableError(
                f"xAI answered {response.status_code} to the client-secret request."
            )
        body = response.json()
        # Tolerate both the flat shape and one nested under "client_secret".
        payload = body.get("client_secret", body) if isinstance(body, dict) else {}
        value, expires_at = payload.get("value"), payload.get("expires_at")
        if not isinstance(value, str) or not isinstance(expires_at, int | float):
            raise XAIUnavailableError("xAI's client-secret answer had no value or expiry.")
        return ClientSecret(value=value, expires_at=int(expires_at))

    def forget(self, workspace_id: str | None = None) -> None:
        with self._lock:
            if workspace_id is None:
                self._cache.clear()
            else:
                for key in [k for k in self._cache if k[0] == workspace_id]:
                    del self._cache[key]
