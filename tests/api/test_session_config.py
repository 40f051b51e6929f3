"""The resolved session config: routing, voices, turn detection, tools, errors, cache."""

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from control_plane.sessions.cache import serialize
from control_plane.sessions.models import ResolvedSessionConfig
from tests.conftest import FakeXAI, Tokens, auth

XAI_KEY = "xai-" + "SessionConfigKey0123456789" + "Wxyz"
KEY_MISSING = (
    "xAI API key not configured for this workspace. Please add it in Settings > Workspace API Keys."
)
SEED_MAP = {
    "marin": "Ara",
    "cedar": "Rex",
    "shimmer": "Eve",
    "alloy": "Sal",
    "onyx": "Rex",
    "echo": "Ara",
    "nova": "Eve",
}
LOOKUP = {
    "name": "lookup_order",
    "description": "Look up an order",
    "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
}


@pytest.fixture
def grok_ready(client: TestClient, tokens: Tokens) -> None:
    """acme is in the internal cohort and has an xAI key; globex has neither."""
    assert (
        client.put(
            "/api/v1/cohorts/internal", json={"members": ["acme"]}, headers=auth(tokens.admin)
        ).status_code
        == 200
    )
    put = client.put(
        "/api/v1/workspaces/acme/settings/api-keys",
        json={"xai_api_key": XAI_KEY},
        headers=auth(tokens.acme),
    )
    assert put.status_code == 200


def make_agent(client: TestClient, tokens: Tokens, workspace: str = "acme", **fields: Any) -> str:
    body = {"name": "Ava", "pricing_tier": "grok-realtime", "voice": "marin"} | fields
    token = tokens.acme if workspace == "acme" else tokens.globex
    response = client.post(f"/api/v1/workspaces/{workspace}/agents", json=body, headers=auth(token))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def session_config(
    client: TestClient, tokens: Tokens, agent_id: str, workspace: str = "acme", **params: str
) -> Any:
    return client.get(
        f"/api/v1/workspaces/{workspace}/agents/{agent_id}/session-config",
        params=params,
        headers=auth(tokens.service),
    )


@pytest.mark.parametrize(
    ("tier", "voice", "engine", "provider", "model", "url_part"),
    [
        ("premium", "cedar", "openai-realtime", "openai", "gpt-realtime", "api.openai.com"),
        (
            "premium-mini",
            "cedar",
            "openai-realtime",
            "openai",
            "gpt-realtime-mini",
            "api.openai.com",
        ),
        ("balanced", "cedar", "pipecat-pipeline", "pipecat", "gpt-4o-mini", None),
        ("budget", "cedar", "pipecat-pipeline", "pipecat", "gpt-4.1-nano", None),
        ("grok-realtime", "cedar", "grok-realtime", "xai", "grok-voice-latest", "api.x.ai"),
    ],
)
def test_tier_routing(
    client: TestClient,
    tokens: Tokens,
    grok_ready: None,
    tier: str,
    voice: str,
    engine: str,
    provider: str,
    model: str,
    url_part: str | None,
) -> None:
    agent_id = make_agent(client, tokens, pricing_tier=tier, voice=voice)
    config = session_config(client, tokens, agent_id)
    assert config.status_code == 200, config.text
    body = config.json()
    assert (body["engine"], body["tier"]["id"], body["tier"]["engine"]) == (engine, tier, engine)
    assert (body["provider"]["name"], body["provider"]["model"]) == (provider, model)
    if url_part is None:
        assert body["provider"]["realtime_url"] is None
    else:
        assert url_part in body["provider"]["realtime_url"]
    # Voices are mapped for Grok only; OpenAI voices pass through unchanged elsewhere.
    assert body["session"]["voice"] == ("Rex" if tier == "grok-realtime" else "cedar")
    assert body["session"]["audio"] == {
        "input": {"format": {"type": "audio/pcmu", "rate": None}},
        "output": {"format": {"type": "audio/pcmu", "rate": None}},
    }
    assert body["stale"] is False
    assert config.headers["cache-control"] == "no-store"
    if tier == "grok-realtime":
        assert body["credentials"] == {
            "type": "api_key",
            "provider": "xai",
            "value": XAI_KEY,
            "expires_at": None,
        }
        assert body["flag"]["enabled"] is True and body["flag"]["stage"] == "internal"
    else:
        assert body["credentials"] is None and body["flag"] is None


@pytest.mark.parametrize(
    ("requested", "expected"), [*SEED_MAP.items(), ("coral", "Ara"), ("Eve", "Eve"), ("LEO", "Leo")]
)
def test_voice_mapping_reaches_the_config(
    client: TestClient, tokens: Tokens, grok_ready: None, requested: str, expected: str
) -> None:
    body = session_config(client, tokens, make_agent(client, tokens, voice=requested)).json()
    assert body["session"]["voice"] == expected


def test_turn_detection_defaults_and_overrides(
    client: TestClient, tokens: Tokens, grok_ready: None
) -> None:
    default = session_config(client, tokens, make_agent(client, tokens)).json()["session"][
        "turn_detection"
    ]
    assert default == {
        "type": "server_vad",
        "threshold": 0.7,
        "prefix_padding_ms": 200,
        "silence_duration_ms": 600,
    }
    tuned = session_config(
        client, tokens, make_agent(client, tokens, turn_detection_threshold=0.45)
    ).json()
    assert tuned["session"]["turn_detection"]["threshold"] == 0.45


def test_instructions_carry_the_language(
    client: TestClient, tokens: Tokens, grok_ready: None
) -> None:
    agent_id = make_agent(client, tokens, instructions="You are Ava.", language="es-MX")
    session = session_config(client, tokens, agent_id).json()["session"]
    assert session["instructions"].startswith("You are Ava.")
    assert "Spanish (es-MX)" in session["instructions"]
    assert session["language"] == "es-MX"


def test_tools_are_converted_for_grok(client: TestClient, tokens: Tokens, grok_ready: None) -> None:
    agent_id = make_agent(
        client,
        tokens,
        tools=[{"type": "function", "function": LOOKUP}],
        builtin_tools={"web_search": True, "x_search": {"allowed_x_handles": ["@xai", "acme"]}},
    )
    tools = session_config(client, tokens, agent_id).json()["session"]["tools"]
    assert tools == [
        {"type": "function", **LOOKUP},
        {"type": "web_search"},
        {"type": "x_search", "allowed_x_handles": ["xai", "acme"]},
    ]
    # OpenAI Realtime has no built-in search: only the function survives.
    premium = make_agent(
        client,
        tokens,
        pricing_tier="premium",
        voice="alloy",
        tools=[LOOKUP],
        builtin_tools={"web_search": True},
    )
    assert session_config(client, tokens, premium).json()["session"]["tools"] == [
        {"type": "function", **LOOKUP}
    ]


def test_missing_key_is_a_clear_409_never_a_fallback(client: TestClient, tokens: Tokens) -> None:
    client.put("/api/v1/cohorts/internal", json={"members": ["acme"]}, headers=auth(tokens.admin))
    response = session_config(client, tokens, make_agent(client, tokens))
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "xai_api_key_missing"
    assert problem["detail"] == KEY_MISSING
    assert "engine" not in problem and "openai" not in response.text


def test_flag_off_and_killed(client: TestClient, tokens: Tokens, grok_ready: None) -> None:
    client.put(
        "/api/v1/workspaces/globex/settings/api-keys",
        json={"xai_api_key": XAI_KEY},
        headers=auth(tokens.globex),
    )
    # globex had the tier when its agent was made, then left the rollout.
    client.put(
        "/api/v1/cohorts/internal", json={"members": ["acme", "globex"]}, headers=auth(tokens.admin)
    )
    gus = make_agent(client, tokens, workspace="globex")
    client.put("/api/v1/cohorts/internal", json={"members": ["acme"]}, headers=auth(tokens.admin))
    outside = session_config(client, tokens, gus, workspace="globex")
    assert outside.status_code == 403
    assert outside.json()["code"] == "tier_not_enabled"
    assert "internal alpha" in outside.json()["detail"]

    agent_id = make_agent(client, tokens)
    assert session_config(client, tokens, agent_id).status_code == 200
    assert (
        client.post("/api/v1/flags/grok-realtime-tier/kill", headers=auth(tokens.admin)).status_code
        == 200
    )
    killed = session_config(client, tokens, agent_id)
    assert killed.status_code == 403
    assert killed.json()["code"] == "tier_disabled"
    client.post("/api/v1/flags/grok-realtime-tier/resume", headers=auth(tokens.admin))
    assert session_config(client, tokens, agent_id).status_code == 200


def test_errors_and_scope(client: TestClient, tokens: Tokens, grok_ready: None) -> None:
    agent_id = make_agent(client, tokens)
    missing = session_config(client, tokens, "agt_nope")
    assert (missing.status_code, missing.json()["code"]) == (404, "agent_not_found")
    wrong_workspace = session_config(client, tokens, agent_id, workspace="globex")
    assert (wrong_workspace.status_code, wrong_workspace.json()["code"]) == (404, "agent_not_found")
    unknown_workspace = session_config(client, tokens, agent_id, workspace="nowhere")
    assert unknown_workspace.json()["code"] == "workspace_not_found"
    for token in (tokens.acme, tokens.admin):
        response = client.get(
            f"/api/v1/workspaces/acme/agents/{agent_id}/session-config", headers=auth(token)
        )
        assert (response.status_code, response.json()["code"]) == (403, "service_required")
    assert (
        client.get(f"/api/v1/workspaces/acme/agents/{agent_id}/session-config").status_code == 401
    )
    assert session_config(client, tokens, agent_id, credentials="bogus").status_code == 422


def test_every_config_changing_write_bumps_the_version(
    client: TestClient, tokens: Tokens, grok_ready: None
) -> None:
    agent_id = make_agent(client, tokens, voice="marin")
    versions = [session_config(client, tokens, agent_id).json()["config_version"]]
    assert session_config(client, tokens, agent_id).json()["config_version"] == versions[0]

    writes = [
        (
            "PATCH",
            f"/api/v1/workspaces/acme/agents/{agent_id}",
            {"instructions": "new"},
            tokens.acme,
        ),
        ("PATCH", "/api/v1/tiers/grok-realtime", {"expected_latency_ms": 700}, tokens.admin),
        (
            "PUT",
            "/api/v1/voice-maps/grok",
            {"default_voice": "Ara", "entries": {**SEED_MAP, "marin": "Leo"}},
            tokens.admin,
        ),
        (
            "PUT",
            "/api/v1/workspaces/acme/settings/api-keys",
            {"xai_api_key": XAI_KEY[:-4] + "Zzzz"},
            tokens.acme,
        ),
        ("PUT", "/api/v1/cohorts/internal", {"members": ["acme", "globex"]}, tokens.admin),
        ("PUT", "/api/v1/flags/grok-realtime-tier/rollout", {"percentage": 10}, tokens.admin),
    ]
    for method, path, body, token in writes:
        assert client.request(method, path, json=body, headers=auth(token)).status_code == 200, path
        config = session_config(client, tokens, agent_id).json()
        assert config["config_version"] not in versions, path
        versions.append(config["config_version"])
    # The cached answer followed every change: the voice map edit and the new key are served.
    assert config["session"]["voice"] == "Leo"
    assert config["credentials"]["value"].endswith("Zzzz")


def test_cached_answers_come_from_the_hot_path(
    client: TestClient, tokens: Tokens, grok_ready: None
) -> None:
    agent_id = make_agent(client, tokens)
    cache = client.app.state.config_cache  # type: ignore[attr-defined]
    first = session_config(client, tokens, agent_id)
    hits = cache.hits
    second = session_config(client, tokens, agent_id)
    assert cache.hits == hits + 1
    assert second.content == first.content
    assert second.headers["etag"] == first.headers["etag"]
    assert second.headers["x-content-type-options"] == "nosniff"
    not_modified = client.get(
        f"/api/v1/workspaces/acme/agents/{agent_id}/session-config",
        headers={**auth(tokens.service), "If-None-Match": first.headers["etag"]},
    )
    assert not_modified.status_code == 304


def test_inline_agent_config(client: TestClient, tokens: Tokens, grok_ready: None) -> None:
    inline = {
        "pricing_tier": "grok-realtime",
        "voice": "nova",
        "instructions": "Hi",
        "tools": [LOOKUP],
    }
    response = client.post(
        "/api/v1/workspaces/acme/session-config", json=inline, headers=auth(tokens.service)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["agent_id"], body["session"]["voice"], body["engine"]) == (
        None,
        "Eve",
        "grok-realtime",
    )
    assert body["config_version"].endswith(".inline")
    bad = client.post(
        "/api/v1/workspaces/acme/session-config",
        json={**inline, "voice": "bogus"},
        headers=auth(tokens.service),
    )
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_voice")
    forbidden = client.post(
        "/api/v1/workspaces/acme/session-config", json=inline, headers=auth(tokens.acme)
    )
    assert forbidden.status_code == 403


def test_ephemeral_secrets_from_xai(
    client: TestClient, tokens: Tokens, grok_ready: None, fake_xai: FakeXAI
) -> None:
    client.app.state.settings.xai_base_url = fake_xai.base_url  # type: ignore[attr-defined]
    fake_xai.state.accepted_keys.add(XAI_KEY)
    agent_id = make_agent(client, tokens)
    first = session_config(client, tokens, agent_id, credentials="ephemeral").json()["credentials"]
    assert first["type"] == "ephemeral" and first["value"].startswith("xai-eph-")
    assert first["value"] != XAI_KEY and first["expires_at"] > 0
    # Cached until near expiry: one mint, even through an invalidation of the config.
    client.patch(
        f"/api/v1/workspaces/acme/agents/{agent_id}",
        json={"name": "Ava 2"},
        headers=auth(tokens.acme),
    )
    again = session_config(client, tokens, agent_id, credentials="ephemeral").json()["credentials"]
    assert again["value"] == first["value"]
    assert len(fake_xai.state.secrets_minted) == 1
    assert (
        session_config(client, tokens, agent_id, credentials="none").json()["credentials"] is None
    )

    fake_xai.state.accepted_keys.clear()
    client.app.state.resolver.secrets.forget()  # type: ignore[attr-defined]
    client.patch(
        f"/api/v1/workspaces/acme/agents/{agent_id}",
        json={"name": "Ava 3"},
        headers=auth(tokens.acme),
    )
    refused = session_config(client, tokens, agent_id, credentials="ephemeral")
    assert (refused.status_code, refused.json()["code"]) == (502, "xai_api_key_rejected")
    assert XAI_KEY not in refused.text


def test_the_stale_answer_is_the_kept_config_marked_stale(
    client: TestClient, tokens: Tokens, grok_ready: None
) -> None:
    """The cache keeps a config's bytes only; its stale variant (served while the database is
    away) is built from them, and says what the model itself would say, non-ASCII and all."""
    agent_id = make_agent(
        client,
        tokens,
        instructions="Tú eres Ava — «bienvenue» 👋",
        language="es-MX",
        tools=[LOOKUP],
    )
    served = session_config(client, tokens, agent_id)
    assert served.status_code == 200
    cache = client.app.state.config_cache  # type: ignore[attr-defined]
    entry = cache.last_known(("acme", agent_id, "key", "phone"))  # the default mode and channel
    assert entry is not None and entry.served.body == served.content

    from_the_model = ResolvedSessionConfig.model_validate_json(served.content).model_copy(
        update={"stale": True}
    )
    assert entry.stale.body == serialize(from_the_model)
    assert json.loads(entry.stale.body) == {**served.json(), "stale": True}
