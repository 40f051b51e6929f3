"""The tier catalogue and voice maps over REST (the seed's catalogue, ETags, admin edits)."""

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tokens, auth

SEED_PRICES = {
    "premium": (1.92, 0.032),
    "premium-mini": (0.54, 0.009),
    "grok-realtime": (3.00, 0.05),
}


def test_lists_five_tiers_with_seed_prices(client: TestClient) -> None:
    response = client.get("/api/v1/tiers")
    assert response.status_code == 200
    tiers = {t["id"]: t for t in response.json()["tiers"]}
    assert list(tiers) == ["premium", "premium-mini", "balanced", "budget", "grok-realtime"]
    for tier_id, (per_hour, per_minute) in SEED_PRICES.items():
        assert tiers[tier_id]["cost_per_hour"] == per_hour
        assert tiers[tier_id]["cost_per_minute"] == per_minute
        assert tiers[tier_id]["pricing_source"] == "seed"
    assert tiers["balanced"]["pricing_source"] == "operator-set"
    assert tiers["budget"]["pricing_source"] == "operator-set"


def test_grok_tier_matches_the_seed(client: TestClient) -> None:
    grok = client.get("/api/v1/tiers/grok-realtime").json()
    assert grok["name"] == "Grok Realtime"
    assert grok["description"] == "xAI Grok Voice Agent with X/web search integration"
    assert grok["engine"] == "grok-realtime"
    assert len(grok["features"]) == 5
    assert grok["provider_config"] == {
        "llm_provider": "grok-realtime",
        "llm_model": "grok-voice-latest",
        "stt_provider": "grok",
        "stt_model": None,
        "tts_provider": "grok",
        "tts_model": None,
        "telephony_provider": "telnyx",
    }
    assert grok["expected_latency_ms"] == 780
    assert grok["voices"] == ["Ara", "Rex", "Sal", "Eve", "Leo"]
    assert grok["flag_name"] == "grok-realtime-tier"


@pytest.mark.parametrize(
    "path", ["/api/v1/tiers", "/api/v1/tiers/premium", "/api/v1/voice-maps/grok"]
)
def test_etag_gives_304(client: TestClient, path: str) -> None:
    first = client.get(path)
    etag = first.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert "max-age" in first.headers["cache-control"]
    second = client.get(path, headers={"If-None-Match": etag})
    assert second.status_code == 304
    assert second.content == b""
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200


def test_unknown_tier_is_problem_json(client: TestClient) -> None:
    response = client.get("/api/v1/tiers/platinum")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "tier_not_found"


def test_admin_patch_with_if_match(client: TestClient, tokens: Tokens) -> None:
    etag = client.get("/api/v1/tiers/grok-realtime").headers["etag"]
    patched = client.patch(
        "/api/v1/tiers/grok-realtime",
        json={"llm_model": "grok-voice-think-fast-1.0"},
        headers={**auth(tokens.admin), "If-Match": etag},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["provider_config"]["llm_model"] == "grok-voice-think-fast-1.0"
    assert patched.json()["version"] == 2
    assert patched.headers["etag"] != etag

    stale = client.patch(
        "/api/v1/tiers/grok-realtime",
        json={"llm_model": "grok-voice-latest"},
        headers={**auth(tokens.admin), "If-Match": etag},
    )
    assert stale.status_code == 412
    assert stale.json()["code"] == "stale_version"
    assert client.get("/api/v1/tiers/grok-realtime").json()["provider_config"]["llm_model"] == (
        "grok-voice-think-fast-1.0"
    )
    # The ETag a GET hands out after the write is the one the next write must carry.
    fresh = client.get("/api/v1/tiers/grok-realtime").headers["etag"]
    assert fresh == patched.headers["etag"]


def test_patch_needs_admin(client: TestClient, tokens: Tokens) -> None:
    anonymous = client.patch("/api/v1/tiers/premium", json={"name": "x"})
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    for token in (tokens.acme, tokens.service):
        response = client.patch("/api/v1/tiers/premium", json={"name": "x"}, headers=auth(token))
        assert response.status_code == 403
        assert response.json()["code"] == "admin_required"


def test_patch_rejects_unknown_and_negative_fields(client: TestClient, tokens: Tokens) -> None:
    for body in ({"engine": "pipecat-pipeline"}, {"cost_per_hour": -1}, {"name": None}):
        response = client.patch("/api/v1/tiers/premium", json=body, headers=auth(tokens.admin))
        assert response.status_code == 422, body
        assert response.headers["content-type"] == "application/problem+json"
    assert client.get("/api/v1/tiers/premium").json()["engine"] == "openai-realtime"


def test_voices_by_provider(client: TestClient) -> None:
    grok = client.get("/api/v1/voices", params={"provider": "grok"}).json()["voices"]
    assert [v["name"] for v in grok] == ["Ara", "Rex", "Sal", "Eve", "Leo"]
    assert [v["name"] for v in grok if v["is_default"]] == ["Ara"]
    assert client.get("/api/v1/voices", params={"provider": "nobody"}).json()["voices"] == []


SEED_MAP = {
    "marin": "Ara",
    "cedar": "Rex",
    "shimmer": "Eve",
    "alloy": "Sal",
    "onyx": "Rex",
    "echo": "Ara",
    "nova": "Eve",
}


def test_voice_map_is_the_seed_table(client: TestClient) -> None:
    body = client.get("/api/v1/voice-maps/grok").json()
    assert body["entries"] == SEED_MAP
    assert body["default_voice"] == "Ara"
    assert body["source_provider"] == "openai"


@pytest.mark.parametrize(
    ("requested", "expected", "matched"),
    [
        *[(source, target, "map_entry") for source, target in SEED_MAP.items()],
        ("MARIN", "Ara", "map_entry"),
        ("Nova", "Eve", "map_entry"),
        ("coral", "Ara", "default"),
        ("no-such-voice", "Ara", "default"),
        ("rex", "Rex", "target_voice"),
        ("Leo", "Leo", "target_voice"),
    ],
)
def test_voice_resolution(client: TestClient, requested: str, expected: str, matched: str) -> None:
    body = client.get("/api/v1/voice-maps/grok/resolve", params={"voice": requested}).json()
    assert (body["voice"], body["matched"]) == (expected, matched)


def test_admin_replaces_voice_map(client: TestClient, tokens: Tokens) -> None:
    etag = client.get("/api/v1/voice-maps/grok").headers["etag"]
    body = {"default_voice": "leo", "entries": {"Marin": "eve", "coral": "Sal"}}
    response = client.put(
        "/api/v1/voice-maps/grok", json=body, headers={**auth(tokens.admin), "If-Match": etag}
    )
    assert response.status_code == 200, response.text
    assert response.json()["entries"] == {"coral": "Sal", "marin": "Eve"}
    assert response.json()["default_voice"] == "Leo"
    assert response.json()["version"] == 2
    stale = client.put(
        "/api/v1/voice-maps/grok", json=body, headers={**auth(tokens.admin), "If-Match": etag}
    )
    assert stale.status_code == 412


def test_voice_map_rejects_unknown_target_voice(client: TestClient, tokens: Tokens) -> None:
    response = client.put(
        "/api/v1/voice-maps/grok",
        json={"default_voice": "Ara", "entries": {"marin": "Bob"}},
        headers=auth(tokens.admin),
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_voice"
    assert "Bob" in response.json()["detail"]
    assert client.get("/api/v1/voice-maps/grok").json()["entries"] == SEED_MAP
    forbidden = client.put(
        "/api/v1/voice-maps/grok",
        json={"default_voice": "Ara", "entries": {}},
        headers=auth(tokens.acme),
    )
    assert forbidden.status_code == 403


def _tiers(client: TestClient, **kwargs: object) -> tuple[str, dict[str, dict[str, object]]]:
    response = client.get("/api/v1/tiers", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return response.headers["etag"], {t["id"]: t for t in response.json()["tiers"]}


def test_every_kind_of_edit_shows_in_the_next_catalogue_read(
    client: TestClient, tokens: Tokens
) -> None:
    admin = auth(tokens.admin)
    etag, tiers = _tiers(client)
    assert _tiers(client)[0] == etag  # served again as it was
    # A tier edit
    assert client.patch("/api/v1/tiers/budget", json={"name": "Thrift"}, headers=admin).is_success
    etag_after, tiers = _tiers(client)
    assert tiers["budget"]["name"] == "Thrift" and etag_after != etag
    # A voice map edit
    before = client.get("/api/v1/voice-maps/grok").json()
    entries = {**before["entries"], "alloy": "Rex"}
    body = {"default_voice": before["default_voice"], "entries": entries}
    assert client.put("/api/v1/voice-maps/grok", json=body, headers=admin).is_success
    assert client.get("/api/v1/voice-maps/grok").json()["entries"]["alloy"] == "Rex"
    # A cohort change and a flag change: acme's view of availability
    view = {"params": {"workspace_id": "acme"}, "headers": admin}
    assert _tiers(client, **view)[1]["grok-realtime"]["available"] is False
    members = {"members": ["acme"]}
    assert client.put("/api/v1/cohorts/internal", json=members, headers=admin).is_success
    assert _tiers(client, **view)[1]["grok-realtime"]["available"] is True
    assert client.post("/api/v1/flags/grok-realtime-tier/kill", headers=admin).is_success
    killed = _tiers(client, **view)[1]["grok-realtime"]
    assert killed["available"] is False and killed["unavailable_code"] == "tier_disabled"


def test_the_etag_changes_exactly_when_the_body_does(client: TestClient, tokens: Tokens) -> None:
    admin = auth(tokens.admin)
    etag, _ = _tiers(client)
    # A change elsewhere (an agent) and a flag change the anonymous view does not show.
    agent = {"name": "Ava", "pricing_tier": "premium", "voice": "alloy"}
    assert client.post("/api/v1/workspaces/acme/agents", json=agent, headers=admin).is_success
    assert client.post("/api/v1/flags/grok-realtime-tier/kill", headers=admin).is_success
    assert _tiers(client)[0] == etag
    assert client.patch("/api/v1/tiers/budget", json={"quality": "fair"}, headers=admin).is_success
    assert _tiers(client)[0] != etag


@pytest.mark.parametrize("warm", [False, True], ids=["built", "served"])
def test_a_matching_etag_answers_304_with_cache_headers(
    client: TestClient, tokens: Tokens, warm: bool
) -> None:
    etag, _ = _tiers(client)
    if not warm:  # the next request must build it again (the route's path)
        client.app.state.generations.on_change("config:*")  # type: ignore[attr-defined]
    response = client.get("/api/v1/tiers", headers={"If-None-Match": etag})
    assert response.status_code == 304 and response.content == b""
    assert response.headers["cache-control"].startswith("public, max-age=30")
    assert "stale-while-revalidate" in response.headers["cache-control"]
    private = client.get("/api/v1/tiers", headers=auth(tokens.acme))
    assert private.headers["cache-control"].startswith("private")
    assert private.headers["vary"] == "Authorization"


def _database_away(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError

    from control_plane.catalogue.snapshot import CatalogueSnapshot

    def away(self: CatalogueSnapshot, session: object) -> None:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(CatalogueSnapshot, "_load", away)
    client.app.state.generations.on_change("config:*")  # type: ignore[attr-defined]


def test_database_away_serves_the_last_catalogue_marked_stale(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = client.get("/api/v1/tiers")
    _database_away(client, monkeypatch)
    stale = client.get("/api/v1/tiers")
    assert stale.status_code == 200
    assert stale.headers["x-switchboard-stale"] == "true"
    assert stale.content == known.content


def test_database_away_with_nothing_known_is_a_clear_503(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _database_away(client, monkeypatch)
    response = client.get("/api/v1/tiers")
    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"
