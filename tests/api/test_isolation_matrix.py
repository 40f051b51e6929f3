"""Every workspace route with a foreign workspace's token gives 404; every admin route with a
non-admin token gives 403. Generated from the app's routes, so a new route cannot be forgotten:
a route with a request body needs a sample body below, or this test fails and says so."""

from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from control_plane.auth.deps import require_admin, require_service
from tests.conftest import Tokens, auth

SAMPLE_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/workspaces"): {"name": "x"},
    ("PATCH", "/api/v1/workspaces/{workspace_id}/settings"): {"default_language": "en"},
    ("POST", "/api/v1/workspaces/{workspace_id}/agents"): {"name": "x", "pricing_tier": "premium"},
    ("PATCH", "/api/v1/workspaces/{workspace_id}/agents/{agent_id}"): {"name": "pwned"},
    ("PUT", "/api/v1/workspaces/{workspace_id}/settings/api-keys"): {
        "xai_api_key": "xai-" + "p" * 40
    },
    ("POST", "/api/v1/workspaces/{workspace_id}/session-config"): {"pricing_tier": "premium"},
    ("PATCH", "/api/v1/tiers/{tier_id}"): {"name": "x"},
    ("PUT", "/api/v1/voice-maps/{provider}"): {"default_voice": "Ara", "entries": {}},
    ("PUT", "/api/v1/key-providers/{provider_id}"): {"display_name": "X"},
    ("PUT", "/api/v1/flags/{name}/stage"): {"stage": "ga"},
    ("PUT", "/api/v1/flags/{name}/rollout"): {"percentage": 50},
    ("PUT", "/api/v1/cohorts/{name}"): {"members": []},
    ("POST", "/api/v1/tokens"): {"name": "x", "scopes": ["admin"]},
    ("POST", "/api/v1/telemetry/calls"): {
        "call_id": "c1",
        "workspace_id": "acme",
        "agent_id": "a",
        "tier": "premium",
        "engine": "openai-realtime",
        "started_at": "2026-01-01T00:00:00Z",
    },
    ("PATCH", "/api/v1/rollouts/{flag}/guard"): {"min_calls": 1},
    ("POST", "/api/v1/workspaces/{workspace_id}/agents/{agent_id}/calls"): {"channel": "api"},
    ("POST", "/api/v1/calls/claim"): {"stream_token": "st1.x.y"},
    ("POST", "/api/v1/calls/{call_id}/end"): {"reason": "x"},
    ("PUT", "/api/v1/flags/{name}/plan"): {"milestones": [{"name": "ga", "stage": "ga"}]},
    ("POST", "/api/v1/calls/{call_id}/feedback"): {"score": 10},
    ("PUT", "/api/v1/calls/{call_id}/transcript/reference"): {"text": "hello"},
}


def _depends_on(route: APIRoute, function: Any) -> bool:
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        if dependant.call is function:
            return True
        pending.extend(dependant.dependencies)
    return False


def api_routes(client: TestClient) -> list[tuple[str, APIRoute]]:
    routes = []
    pending = list(client.app.routes)  # type: ignore[attr-defined]
    while pending:
        route = pending.pop(0)
        # Included routers appear as one entry holding the router; their routes carry the prefix.
        included = getattr(route, "original_router", None)
        if included is not None:
            pending.extend(included.routes)
        elif isinstance(route, APIRoute) and route.path.startswith("/api/v1/"):
            routes.extend((method, route) for method in sorted(route.methods))
    return routes


def request_for(method: str, route: APIRoute, agent_id: str) -> tuple[str, Any]:
    values = {
        "workspace_id": "acme",
        "agent_id": agent_id,
        "provider": "xai",
        "tier_id": "premium",
        "name": "grok-realtime-tier",
        "flag": "grok-realtime-tier",
        "provider_id": "xai",
        "token_id": "1",
    }
    path = route.path
    for name in route.param_convertors:
        path = path.replace("{" + name + "}", values.get(name, "x"))
    body = None
    if route.body_field is not None:
        key = (method, route.path)
        assert key in SAMPLE_BODIES, f"add a sample body for {method} {route.path} to SAMPLE_BODIES"
        body = SAMPLE_BODIES[key]
    return path, body


@pytest.fixture
def agent_id(client: TestClient, tokens: Tokens) -> str:
    response = client.post(
        "/api/v1/workspaces/acme/agents",
        json={"name": "Ava", "pricing_tier": "premium", "voice": "alloy"},
        headers=auth(tokens.acme),
    )
    return str(response.json()["id"])


def test_foreign_workspace_tokens_get_404_everywhere(
    client: TestClient, tokens: Tokens, agent_id: str
) -> None:
    checked = []
    for method, route in api_routes(client):
        if "{workspace_id}" not in route.path or _depends_on(route, require_admin):
            continue
        path, body = request_for(method, route, agent_id)
        response = client.request(method, path, json=body, headers=auth(tokens.globex))
        expected = 403 if _depends_on(route, require_service) else 404
        assert response.status_code == expected, (method, route.path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        checked.append(f"{method} {route.path}")
    assert len(checked) >= 15, checked
    # Nothing changed for acme.
    agent = client.get(
        f"/api/v1/workspaces/acme/agents/{agent_id}", headers=auth(tokens.acme)
    ).json()
    assert agent["name"] == "Ava"


def test_admin_routes_refuse_other_tokens(
    client: TestClient, tokens: Tokens, agent_id: str
) -> None:
    checked = []
    for method, route in api_routes(client):
        if not _depends_on(route, require_admin):
            continue
        path, body = request_for(method, route, agent_id)
        for token in (tokens.acme, tokens.service):
            response = client.request(method, path, json=body, headers=auth(token))
            assert response.status_code == 403, (method, route.path, response.text)
            assert response.json()["code"] == "admin_required"
        checked.append(f"{method} {route.path}")
    assert len(checked) >= 20, checked
    assert (
        client.get("/api/v1/flags/grok-realtime-tier", headers=auth(tokens.admin)).json()["stage"]
        == "internal"
    )
