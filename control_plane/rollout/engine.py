"""Where flags are evaluated: the embedded Unleash engine, or a real Unleash server.

Embedded (default): the compiled features from our database are loaded into `yggdrasil-engine`,
the engine under the official Unleash SDKs, and evaluated in-process.
Scale mode (SWITCHBOARD_UNLEASH_URL): the official `UnleashClient` SDK polls the Unleash server,
and our writes go to the server through its Admin API.
"""

import json
import logging
import tempfile
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import httpx
from yggdrasil_engine.engine import UnleashEngine

from control_plane.errors import ServiceUnavailableError
from control_plane.rollout.compiler import WORKSPACE_FIELD
from control_plane.settings import Settings

logger = logging.getLogger(__name__)


def client_features_document(
    features: Iterable[dict[str, Any]], environment: str
) -> dict[str, Any]:
    """The body of Unleash's client API (`GET /api/client/features`, version 2)."""
    return {
        "version": 2,
        "features": list(features),
        "segments": [],
        "query": {
            "project": ["default"],
            "environment": environment,
            "inlineSegmentConstraints": True,
        },
    }


class FlagEvaluator(Protocol):
    mode: str

    def is_enabled(self, flag: str, workspace_id: str) -> bool: ...

    def load(self, features: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


class EmbeddedEvaluator:
    """yggdrasil-engine in-process.

    Decisions per (flag, workspace) are memoized until the next load: the features we compile
    use no time- or request-dependent constraints, so the same state and workspace always give
    the same answer, and the hot path pays a dict lookup instead of a round trip through FFI.
    """

    mode = "embedded"
    MEMO_LIMIT = 100_000

    def __init__(self, settings: Settings) -> None:
        self._engine = UnleashEngine()
        self._memo: dict[tuple[str, str], bool] = {}
        self._context_base = {
            "environment": settings.unleash_environment,
            "appName": settings.unleash_app_name,
        }
        self._lock = threading.Lock()

    def load(self, features: list[dict[str, Any]]) -> None:
        self.load_document(client_features_document(features, self._context_base["environment"]))

    def load_document(self, document: dict[str, Any]) -> None:
        """Any client-API state (features and segments, or delta events) the engine accepts."""
        with self._lock:
            warnings = self._engine.take_state(json.dumps(document))
            self._memo = {}
        if warnings:
            logger.warning("flag engine warnings: %s", warnings)

    def is_enabled(self, flag: str, workspace_id: str) -> bool:
        decision = self._memo.get((flag, workspace_id))
        if decision is None:
            context = {"properties": {WORKSPACE_FIELD: workspace_id}}
            decision = self._remember((flag, workspace_id), flag, context)
        return decision

    def check(self, flag: str, context: dict[str, Any]) -> bool:
        """Any context through the same memo, keyed by its canonical JSON (which starts with
        `{`, so it never collides with a workspace id)."""
        key = (flag, json.dumps(context, sort_keys=True, separators=(",", ":")))
        decision = self._memo.get(key)
        if decision is None:
            decision = self._remember(key, flag, context)
        return decision

    def _remember(self, key: tuple[str, str], flag: str, context: dict[str, Any]) -> bool:
        # The memo is taken before evaluating: a load that lands meanwhile replaces it, so an
        # answer from the state before that load goes into the discarded memo, never the new
        # one (taken after, a kill landing mid-evaluation left "enabled" memoized until the
        # next load).
        memo = self._memo
        decision = self.evaluate(flag, context)
        if len(memo) >= self.MEMO_LIMIT:
            memo.clear()
        memo[key] = decision
        return decision

    def evaluate(self, flag: str, context: dict[str, Any]) -> bool:
        """Evaluate without the memo (any context, as the Unleash SDKs do)."""
        return bool(self._engine.check_enabled(flag, {**self._context_base, **context}).is_enabled)

    def variant(self, flag: str, context: dict[str, Any]) -> dict[str, Any]:
        variant = self._engine.get_variant(flag, {**self._context_base, **context}).variant
        return {
            "name": variant.name,
            "payload": variant.payload,
            "enabled": variant.enabled,
            "feature_enabled": variant.feature_enabled,
        }

    def close(self) -> None:
        return None


class UnleashServerEvaluator:
    """The official Python SDK, polling a real Unleash server.

    `on_new_state` runs (on the SDK's event thread) each time a poll brought features that
    differ from the last ones (the SDK sends the server's ETag; an unchanged state is a 304
    and no event): whatever was built from the old decisions is stale from then on.
    """

    mode = "unleash-server"

    def __init__(self, settings: Settings, on_new_state: Callable[[], None]) -> None:
        from UnleashClient import UnleashClient  # type: ignore[attr-defined]
        from UnleashClient.events import UnleashEventType

        def on_event(event: Any) -> None:
            if event.event_type is UnleashEventType.FETCHED:
                on_new_state()

        assert settings.unleash_url and settings.unleash_client_token
        self._cache_dir = tempfile.TemporaryDirectory(prefix="switchboard-unleash-")
        self._client = UnleashClient(
            url=settings.unleash_url.rstrip("/") + "/api",
            app_name=settings.unleash_app_name,
            environment=settings.unleash_environment,
            refresh_interval=settings.unleash_refresh_interval_seconds,
            metrics_interval=30,
            custom_headers={"Authorization": settings.unleash_client_token.get_secret_value()},
            cache_directory=self._cache_dir.name,
            request_timeout=5,
            request_retries=1,
            event_callback=on_event,
        )
        self._client.initialize_client()

    def load(self, features: list[dict[str, Any]]) -> None:
        # The server owns the state; the SDK picks up changes on its next poll.
        return None

    def is_enabled(self, flag: str, workspace_id: str) -> bool:
        return bool(self._client.is_enabled(flag, {"properties": {WORKSPACE_FIELD: workspace_id}}))

    def close(self) -> None:
        self._client.destroy()
        self._cache_dir.cleanup()


class UnleashAdmin:
    """Writes compiled features to a real Unleash server through its Admin API."""

    def __init__(self, settings: Settings) -> None:
        assert settings.unleash_url and settings.unleash_admin_token
        self.project = settings.unleash_project
        self.environment = settings.unleash_environment
        self._http = httpx.Client(
            base_url=settings.unleash_url.rstrip("/"),
            headers={"Authorization": settings.unleash_admin_token.get_secret_value()},
            timeout=10,
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(
                f"The Unleash server is unreachable ({type(exc).__name__}); nothing was changed.",
                code="unleash_unavailable",
            ) from exc
        if response.status_code >= 400 and not (method == "POST" and response.status_code == 409):
            raise ServiceUnavailableError(
                f"The Unleash server refused {method} {path} ({response.status_code}); "
                "nothing was changed.",
                code="unleash_error",
            )
        return response

    def ensure_context_field(self) -> None:
        fields = self._request("GET", "/api/admin/context").json()
        if not any(field.get("name") == WORKSPACE_FIELD for field in fields):
            self._request(
                "POST",
                "/api/admin/context",
                json={
                    "name": WORKSPACE_FIELD,
                    "description": "Switchboard workspace id",
                    "stickiness": True,
                },
            )

    def _feature_path(self, name: str) -> str:
        return f"/api/admin/projects/{self.project}/features/{name}"

    def exists(self, name: str) -> bool:
        response = self._http.get(self._feature_path(name))
        return response.status_code == 200

    def push(self, feature: dict[str, Any]) -> None:
        """Make the server's feature match `feature`: create it if missing, replace strategies."""
        name = feature["name"]
        if not self.exists(name):
            self._request(
                "POST",
                f"/api/admin/projects/{self.project}/features",
                json={
                    "name": name,
                    "type": feature.get("type", "release"),
                    "description": feature.get("description", ""),
                },
            )
        environment_path = f"{self._feature_path(name)}/environments/{self.environment}"
        # Disable first, so the feature is never on with a half-replaced set of strategies.
        self._request("POST", f"{environment_path}/off")
        current = self._request("GET", f"{environment_path}/strategies").json()
        for strategy in current:
            self._request("DELETE", f"{environment_path}/strategies/{strategy['id']}")
        for strategy in feature["strategies"]:
            self._request(
                "POST",
                f"{environment_path}/strategies",
                json={
                    "name": strategy["name"],
                    "parameters": strategy.get("parameters", {}),
                    "constraints": strategy.get("constraints", []),
                },
            )
        if feature["enabled"]:
            self._request("POST", f"{environment_path}/on")

    def close(self) -> None:
        self._http.close()
