"""Workspaces and agents: validation of tier and voice, isolation between workspaces."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tokens, auth

LOOKUP = {
    "name": "lookup_order",
    "description": "Look up an order",
    "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
}


def create_agent(client: TestClient, token: str, workspace: str = "acme", **fields: Any) -> Any:
    body = {"name": "Ava", "pricing_tier": "grok-realtime", "voice": "marin"} | fields
    return client.post(f"/api/v1/workspaces/{workspace}/agents", json=body, headers=auth(token))


def test_workspace_crud_and_visibility(client: TestClient, tokens: Tokens) -> None:
    listed = client.get("/api/v1/workspaces", headers=auth(tokens.admin)).json()["workspaces"]
    assert [w["id"] for w in listed] == ["acme", "globex"]
    mine = client.get("/api/v1/workspaces", headers=auth(tokens.acme)).json()["workspaces"]
    assert [w["id"] for w in mine] == ["acme"]
    assert client.get("/api/v1/workspaces/acme", headers=auth(tokens.acme)).status_code == 200
    foreign = client.get("/api/v1/workspaces/globex", headers=auth(tokens.acme))
    missing = client.get("/api/v1/workspaces/nope", headers=auth(tokens.acme))
    # Same answer for "exists but not yours" and "does not exist": no existence leak.
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["code"] == missing.json()["code"] == "workspace_not_found"


def test_only_admin_creates_workspaces(client: TestClient, tokens: Tokens) -> None:
    response = client.post("/api/v1/workspaces", json={"name": "Evil"}, headers=auth(tokens.acme))
    assert response.status_code == 403
    created = client.post(
        "/api/v1/workspaces", json={"name": "Initech Ops"}, headers=auth(tokens.admin)
    )
    assert created.status_code == 201
    assert created.json()["id"].startswith("initech-ops-")
    duplicate = client.post(
        "/api/v1/workspaces", json={"id": "acme", "name": "Acme again"}, headers=auth(tokens.admin)
    )
    assert duplicate.status_code == 409
    assert duplicate.json()["code"] == "workspace_exists"


def test_agent_crud(client: TestClient, tokens: Tokens) -> None:
    created = create_agent(client, tokens.acme, tools=[LOOKUP], turn_detection_threshold=0.55)
    assert created.status_code == 201, created.text
    agent = created.json()
    assert agent["voice"] == "marin"
    assert agent["resolved_voice"] == "Ara"
    assert agent["tools"][0]["name"] == "lookup_order"
    path = f"/api/v1/workspaces/acme/agents/{agent['id']}"

    assert client.get(path, headers=auth(tokens.acme)).json()["id"] == agent["id"]
    listed = client.get("/api/v1/workspaces/acme/agents", headers=auth(tokens.acme)).json()
    assert [a["id"] for a in listed["agents"]] == [agent["id"]]

    patched = client.patch(
        path, json={"voice": "Rex", "language": "es-MX"}, headers=auth(tokens.acme)
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["voice"], patched.json()["version"]) == ("Rex", 2)

    assert client.delete(path, headers=auth(tokens.acme)).status_code == 204
    gone = client.get(path, headers=auth(tokens.acme))
    assert gone.status_code == 404
    assert gone.json()["code"] == "agent_not_found"


def test_chat_completions_tool_form_is_flattened(client: TestClient, tokens: Tokens) -> None:
    created = create_agent(client, tokens.acme, tools=[{"type": "function", "function": LOOKUP}])
    assert created.status_code == 201, created.text
    assert created.json()["tools"] == [{"type": "function", **LOOKUP}]


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ({"pricing_tier": "platinum"}, "invalid_tier", "platinum"),
        ({"pricing_tier": "premium", "voice": "Ara"}, "invalid_voice", "Ara"),
        ({"voice": "bogus"}, "invalid_voice", "bogus"),
        ({"turn_detection_threshold": 1.5}, "validation_error", "turn_detection_threshold"),
        ({"language": "english please"}, "validation_error", "language"),
        ({"tools": [{"name": "bad name!"}]}, "validation_error", "tools"),
        ({"tools": [LOOKUP, LOOKUP]}, "duplicate_tool_name", "unique"),
        (
            {"tools": [{"name": "x", "parameters": {"type": "string"}}]},
            "validation_error",
            "object",
        ),
        ({"surprise": True}, "validation_error", "surprise"),
    ],
)
def test_invalid_agents_are_rejected_and_nothing_is_stored(
    client: TestClient, tokens: Tokens, fields: dict[str, Any], code: str, words: str
) -> None:
    response = create_agent(client, tokens.acme, **fields)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == code
    assert words in problem["detail"]
    assert (
        client.get("/api/v1/workspaces/acme/agents", headers=auth(tokens.acme)).json()["agents"]
        == []
    )


def test_grok_accepts_grok_and_openai_voices_case_insensitively(
    client: TestClient, tokens: Tokens
) -> None:
    assert create_agent(client, tokens.acme, voice="eve").json()["voice"] == "Eve"
    assert create_agent(client, tokens.acme, voice="NOVA").json()["voice"] == "nova"
    assert create_agent(client, tokens.acme, voice="coral").json()["resolved_voice"] == "Ara"
    default = create_agent(client, tokens.acme, voice=None).json()
    assert default["voice"] == "Ara"


def test_switching_tier_revalidates_voice(client: TestClient, tokens: Tokens) -> None:
    agent = create_agent(client, tokens.acme, voice="Leo").json()
    path = f"/api/v1/workspaces/acme/agents/{agent['id']}"
    refused = client.patch(path, json={"pricing_tier": "premium"}, headers=auth(tokens.acme))
    assert refused.status_code == 422
    assert refused.json()["code"] == "invalid_voice"
    moved = client.patch(
        path, json={"pricing_tier": "premium", "voice": "alloy"}, headers=auth(tokens.acme)
    )
    assert moved.status_code == 200
    assert moved.json()["resolved_voice"] == "alloy"


def test_agents_are_isolated_between_workspaces(client: TestClient, tokens: Tokens) -> None:
    agent = create_agent(client, tokens.acme).json()
    for method, path, body in [
        ("GET", "/api/v1/workspaces/acme/agents", None),
        ("POST", "/api/v1/workspaces/acme/agents", {"name": "x", "pricing_tier": "premium"}),
        ("GET", f"/api/v1/workspaces/acme/agents/{agent['id']}", None),
        ("PATCH", f"/api/v1/workspaces/acme/agents/{agent['id']}", {"name": "pwned"}),
        ("DELETE", f"/api/v1/workspaces/acme/agents/{agent['id']}", None),
        ("GET", "/api/v1/workspaces/acme/settings", None),
    ]:
        response = client.request(method, path, json=body, headers=auth(tokens.globex))
        assert response.status_code == 404, (method, path)
    # The agent is also invisible through the wrong workspace path, even to its own workspace.
    assert (
        client.get(
            f"/api/v1/workspaces/globex/agents/{agent['id']}", headers=auth(tokens.acme)
        ).status_code
        == 404
    )
    assert (
        client.get(
            f"/api/v1/workspaces/acme/agents/{agent['id']}", headers=auth(tokens.acme)
        ).json()["name"]
        == "Ava"
    )


def test_workspace_settings(client: TestClient, tokens: Tokens) -> None:
    path = "/api/v1/workspaces/acme/settings"
    assert client.get(path, headers=auth(tokens.acme)).json()["default_language"] == "en"
    patched = client.patch(
        path, json={"default_tier_id": "grok-realtime"}, headers=auth(tokens.acme)
    )
    assert patched.json()["default_tier_id"] == "grok-realtime"
    bad = client.patch(path, json={"default_tier_id": "platinum"}, headers=auth(tokens.acme))
    assert bad.status_code == 404
    assert client.get(path, headers=auth(tokens.acme)).json()["default_tier_id"] == "grok-realtime"
