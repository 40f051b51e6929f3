"""Workspaces and agents: validation of tier and voice, isolation between workspaces."""

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from control_plane.workspaces import service as workspaces_service
from tests.conftest import Tokens, auth

LOOKUP = {
    "name": "lookup_order",
    "description": "Look up an order",
    "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
}


@pytest.fixture(autouse=True)
def grok_open_to_acme(client: TestClient, tokens: Tokens) -> Iterator[None]:
    """acme is in the internal cohort, so its agents may be put on grok-realtime."""
    put = client.put(
        "/api/v1/cohorts/internal", json={"members": ["acme"]}, headers=auth(tokens.admin)
    )
    assert put.status_code == 200
    yield


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


def _create_agents(client: TestClient, token: str, count: int) -> list[str]:
    ids = []
    for index in range(count):
        body = {"name": f"Agent {index}", "pricing_tier": "premium", "voice": "alloy"}
        response = client.post("/api/v1/workspaces/acme/agents", json=body, headers=auth(token))
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def test_agents_come_in_pages_with_a_stable_order(client: TestClient, tokens: Tokens) -> None:
    created = _create_agents(client, tokens.admin, 130)
    seen, cursor, sizes = [], None, []
    while True:
        params: dict[str, object] = {"limit": 50} | ({"cursor": cursor} if cursor else {})
        page = client.get(
            "/api/v1/workspaces/acme/agents", params=params, headers=auth(tokens.acme)
        )
        assert page.status_code == 200, page.text
        sizes.append(len(page.json()["agents"]))
        seen += [a["id"] for a in page.json()["agents"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert sizes == [50, 50, 30]
    assert seen == created  # oldest first, each once
    default = client.get("/api/v1/workspaces/acme/agents", headers=auth(tokens.acme)).json()
    assert len(default["agents"]) == 100 and default["next_cursor"] is not None
    empty = client.get("/api/v1/workspaces/acme/agents?cursor=", headers=auth(tokens.acme))
    assert empty.json() == default  # an empty cursor is the first page
    bad = client.get(
        "/api/v1/workspaces/acme/agents",
        params={"cursor": "bm90LWEtY3Vyc29y"},
        headers=auth(tokens.acme),
    )
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_cursor"
    too_many = client.get(
        "/api/v1/workspaces/acme/agents", params={"limit": 501}, headers=auth(tokens.acme)
    )
    assert too_many.status_code == 422


def test_a_workspace_cannot_grow_past_its_agent_quota(client: TestClient, tokens: Tokens) -> None:
    client.app.state.settings.max_agents_per_workspace = 3  # type: ignore[attr-defined]
    _create_agents(client, tokens.acme, 3)
    body = {"name": "One too many", "pricing_tier": "premium", "voice": "alloy"}
    refused = client.post("/api/v1/workspaces/acme/agents", json=body, headers=auth(tokens.acme))
    assert refused.status_code == 409 and refused.json()["code"] == "agent_quota_exceeded"


BIG_TOOLS = [
    {
        "name": f"tool_{i}",
        "description": f"Tool {i} looks things up in the order system. " * 20,
        "parameters": {
            "type": "object",
            "properties": {f"p{j}": {"type": "string"} for j in range(100)},
        },
    }
    for i in range(30)
]


def test_an_oversized_agent_is_refused(client: TestClient, tokens: Tokens) -> None:
    body = {"name": "Huge", "pricing_tier": "premium", "voice": "alloy", "tools": BIG_TOOLS}
    refused = client.post("/api/v1/workspaces/acme/agents", json=body, headers=auth(tokens.acme))
    assert refused.status_code == 422 and refused.json()["code"] == "agent_too_large"
    listed = client.get("/api/v1/workspaces/acme/agents", headers=auth(tokens.acme)).json()
    assert listed["agents"] == []  # nothing stored


def test_without_quotas_one_token_fills_the_database(
    client: TestClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_plane.workspaces import service

    monkeypatch.setattr(
        service, "agent_limits", lambda settings: service.AgentLimits(10**9, 10**9, 64)
    )
    client.app.state.settings.max_agents_per_workspace = 3  # type: ignore[attr-defined]
    _create_agents(client, tokens.acme, 4)
    body = {"name": "Huge", "pricing_tier": "premium", "voice": "alloy", "tools": BIG_TOOLS}
    stored = client.post("/api/v1/workspaces/acme/agents", json=body, headers=auth(tokens.acme))
    assert stored.status_code == 201


def test_an_agent_has_at_most_the_configured_tools(client: TestClient, tokens: Tokens) -> None:
    tools = [{"name": f"t{i}", "description": "d"} for i in range(33)]
    body = {"name": "Busy", "pricing_tier": "premium", "voice": "alloy", "tools": tools}
    refused = client.post("/api/v1/workspaces/acme/agents", json=body, headers=auth(tokens.acme))
    assert refused.status_code == 422 and refused.json()["code"] == "too_many_tools"
    body["tools"] = tools[:32]
    assert client.post(
        "/api/v1/workspaces/acme/agents", json=body, headers=auth(tokens.acme)
    ).is_success


def _names(client: TestClient, token: str) -> list[str]:
    page = client.get("/api/v1/workspaces/acme/agents", params={"limit": 50}, headers=auth(token))
    assert page.status_code == 200, page.text
    return [a["name"] for a in page.json()["agents"]]


def test_a_page_of_agents_shows_every_change_at_once(client: TestClient, tokens: Tokens) -> None:
    ids = _create_agents(client, tokens.acme, 3)
    assert _names(client, tokens.acme) == ["Agent 0", "Agent 1", "Agent 2"]
    assert _names(client, tokens.acme) == ["Agent 0", "Agent 1", "Agent 2"]  # from memory now
    path = f"/api/v1/workspaces/acme/agents/{ids[1]}"
    assert client.patch(path, json={"name": "Renamed"}, headers=auth(tokens.acme)).is_success
    assert _names(client, tokens.acme) == ["Agent 0", "Renamed", "Agent 2"]
    assert client.delete(path, headers=auth(tokens.acme)).status_code == 204
    assert _names(client, tokens.acme) == ["Agent 0", "Agent 2"]
    # Another workspace's token never gets acme's page, cached or not.
    refused = client.get("/api/v1/workspaces/acme/agents", headers=auth(tokens.globex))
    assert refused.status_code == 404


def test_without_invalidation_a_cached_page_would_hide_changes(
    client: TestClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_plane import kept

    monkeypatch.setattr(kept, "WORKSPACE_TOPIC_PREFIX", "no-such-topic:")  # changes unheard
    ids = _create_agents(client, tokens.acme, 2)
    assert _names(client, tokens.acme) == ["Agent 0", "Agent 1"]
    path = f"/api/v1/workspaces/acme/agents/{ids[1]}"
    assert client.patch(path, json={"name": "Renamed"}, headers=auth(tokens.acme)).is_success
    assert _names(client, tokens.acme) == ["Agent 0", "Agent 1"]


def test_a_page_built_while_a_change_arrived_is_not_kept() -> None:
    from control_plane.kept import Generations
    from control_plane.served import Served
    from control_plane.workspaces.cache import AgentPages

    class Flags:
        generation = 0

    generations = Generations(Flags())
    pages = AgentPages(generations)
    stamp = pages.stamp("acme")
    generations.on_change("config:acme")  # the change lands while the page is being built
    pages.put(("acme", 50, None), Served.of(b"{}", "private"), stamp)
    assert pages.get(("acme", 50, None)) is None
    pages.put(("acme", 50, None), Served.of(b"{}", "private"), pages.stamp("acme"))
    assert pages.get(("acme", 50, None)) is not None
    generations.on_change("config:globex")  # another workspace: this page stays
    assert pages.get(("acme", 50, None)) is not None
    generations.on_change("config:*")
    assert pages.get(("acme", 50, None)) is None


# --- a tier the workspace may not use ---------------------------------------------------------


def agents_of(client: TestClient, token: str, workspace: str) -> list[dict[str, Any]]:
    listed = client.get(f"/api/v1/workspaces/{workspace}/agents", headers=auth(token))
    return list(listed.json()["agents"])


def test_an_agent_cannot_be_put_on_a_tier_its_workspace_may_not_use(
    client: TestClient, tokens: Tokens
) -> None:
    refused = create_agent(client, tokens.globex, workspace="globex", voice="Rex")
    assert refused.status_code == 403
    assert refused.json()["code"] == "tier_not_enabled"
    assert "internal alpha" in refused.json()["detail"]
    assert agents_of(client, tokens.globex, "globex") == []  # nothing stored

    agent = create_agent(client, tokens.globex, workspace="globex", pricing_tier="premium").json()
    path = f"/api/v1/workspaces/globex/agents/{agent['id']}"
    moved = client.patch(path, json={"pricing_tier": "grok-realtime"}, headers=auth(tokens.globex))
    assert (moved.status_code, moved.json()["code"]) == (403, "tier_not_enabled")
    stored = client.get(path, headers=auth(tokens.globex)).json()
    assert stored["pricing_tier"] == "premium"


def test_a_killed_tier_takes_no_new_agents_but_keeps_the_ones_it_has(
    client: TestClient, tokens: Tokens
) -> None:
    agent = create_agent(client, tokens.acme).json()
    kill = client.post("/api/v1/flags/grok-realtime-tier/kill", json={}, headers=auth(tokens.admin))
    assert kill.status_code == 200
    refused = create_agent(client, tokens.acme, name="Second")
    assert (refused.status_code, refused.json().get("code")) == (403, "tier_disabled"), refused.text
    # Editing an agent that stays on its tier is not choosing the tier again.
    path = f"/api/v1/workspaces/acme/agents/{agent['id']}"
    renamed = client.patch(
        path, json={"name": "Ava 2", "pricing_tier": "grok-realtime"}, headers=auth(tokens.acme)
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Ava 2"


def test_without_the_tier_rule_an_agent_lands_on_a_closed_tier(
    client: TestClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workspaces_service, "_check_tier_enabled", lambda *args: None)
    created = create_agent(client, tokens.globex, workspace="globex", voice="Rex")
    assert created.status_code == 201
    assert [a["pricing_tier"] for a in agents_of(client, tokens.globex, "globex")] == [
        "grok-realtime"
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/tokens",
        "/api/v1/audit",
        "/api/v1/workspaces",
        "/api/v1/workspaces/acme/calls",
        "/api/v1/workspaces/acme/agents",
    ],
)
def test_an_empty_cursor_is_the_first_page_on_every_list(
    client: TestClient, tokens: Tokens, path: str
) -> None:
    """The document allows `?cursor=` (its pattern matches ""): the code reads it as no cursor,
    on the routes and not only on the fast path (the agents' list asked cold here)."""
    client.app.state.generations.on_change("resync")  # type: ignore[attr-defined]
    first = client.get(path, headers=auth(tokens.admin))
    empty = client.get(f"{path}?cursor=", headers=auth(tokens.admin))
    assert first.status_code == 200, first.text
    assert (empty.status_code, empty.json()) == (200, first.json())
