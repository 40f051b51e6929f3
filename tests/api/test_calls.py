"""Issued calls over REST, on SQLite and PostgreSQL: issue, claim once, renew, end, the
per-workspace cap, lapsed leases, and the same refusals as session configs."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session

from control_plane.calls import service as calls_service
from control_plane.calls.models import Call
from tests.conftest import Tokens, auth

XAI_KEY = "xai-" + "CallsTestKey0123456789abcd" + "Zz42"


@pytest.fixture
def agent(client: TestClient, tokens: Tokens) -> str:
    """A Grok agent of acme, which is in the internal cohort and has an xAI key."""
    client.put(
        "/api/v1/cohorts/internal", json={"members": ["acme"]}, headers=auth(tokens.admin)
    ).raise_for_status()
    client.put(
        "/api/v1/workspaces/acme/settings/api-keys",
        json={"xai_api_key": XAI_KEY},
        headers=auth(tokens.admin),
    ).raise_for_status()
    response = client.post(
        "/api/v1/workspaces/acme/agents",
        json={"name": "Ava", "pricing_tier": "grok-realtime", "voice": "Ara"},
        headers=auth(tokens.admin),
    )
    return str(response.json()["id"])


def issue(
    client: TestClient, tokens: Tokens, agent: str, workspace: str = "acme", **body: Any
) -> Any:
    return client.post(
        f"/api/v1/workspaces/{workspace}/agents/{agent}/calls",
        json={"channel": "api", **body},
        headers=auth(tokens.service),
    )


def claim(client: TestClient, tokens: Tokens, token: str, agent: str | None = None) -> Any:
    body = {"stream_token": token} | ({"agent_id": agent} if agent else {})
    return client.post("/api/v1/calls/claim", json=body, headers=auth(tokens.service))


def set_cap(client: TestClient, tokens: Tokens, cap: int) -> None:
    client.patch(
        "/api/v1/workspaces/acme/settings",
        json={"max_concurrent_calls": cap},
        headers=auth(tokens.admin),
    ).raise_for_status()


def test_a_call_is_issued_claimed_once_renewed_and_ended(
    client: TestClient, tokens: Tokens, agent: str
) -> None:
    issued = issue(client, tokens, agent, provider_call_id="CA42")
    assert issued.status_code == 201, issued.text
    body = issued.json()
    assert body["call_id"].startswith("call_") and body["stream_token"].startswith("st1.")
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(seconds=50) < expires - datetime.now(UTC) <= timedelta(seconds=60)
    assert issued.headers["cache-control"] == "no-store"

    claimed = claim(client, tokens, body["stream_token"], agent)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json() | {"lease_expires_at": None} == {
        "call_id": body["call_id"],
        "workspace_id": "acme",
        "agent_id": agent,
        "channel": "api",
        "lease_seconds": 60,
        "lease_expires_at": None,
    }
    again = claim(client, tokens, body["stream_token"], agent)
    assert (again.status_code, again.json()["code"]) == (401, "stream_token_used")

    call_id = body["call_id"]
    renewed = client.post(f"/api/v1/calls/{call_id}/lease", headers=auth(tokens.service))
    assert renewed.status_code == 200
    listed = client.get("/api/v1/workspaces/acme/calls", headers=auth(tokens.acme)).json()
    assert (listed["active"], listed["max_concurrent_calls"]) == (1, 20)
    assert listed["calls"][0]["provider_call_id"] == "CA42"
    assert listed["calls"][0]["state"] == "active"

    ended = client.post(
        f"/api/v1/calls/{call_id}/end", json={"reason": "no_handler"}, headers=auth(tokens.service)
    )
    assert ended.json()["state"] == "ended" and ended.json()["end_reason"] == "no_handler"
    late = client.post(f"/api/v1/calls/{call_id}/lease", headers=auth(tokens.service))
    assert (late.status_code, late.json()["code"]) == (409, "call_not_active")
    unknown = client.post("/api/v1/calls/call_nope/lease", headers=auth(tokens.service))
    assert (unknown.status_code, unknown.json()["code"]) == (404, "call_not_found")


def test_calls_are_refused_like_session_configs(
    client: TestClient, tokens: Tokens, agent: str
) -> None:
    def internal(*members: str) -> None:
        put = client.put(
            "/api/v1/cohorts/internal", json={"members": list(members)}, headers=auth(tokens.admin)
        )
        assert put.status_code == 200

    internal("acme", "globex")  # globex had the tier when its agent was made, then left it
    gus = client.post(
        "/api/v1/workspaces/globex/agents",
        json={"name": "Gus", "pricing_tier": "grok-realtime", "voice": "Rex"},
        headers=auth(tokens.admin),
    ).json()["id"]
    internal("acme")
    assert issue(client, tokens, gus, "globex").json()["code"] == "tier_not_enabled"
    internal("acme", "globex")
    missing = issue(client, tokens, gus, "globex")
    assert (missing.status_code, missing.json()["code"]) == (409, "xai_api_key_missing")
    assert issue(client, tokens, "agt_nope").json()["code"] == "agent_not_found"
    client.post("/api/v1/flags/grok-realtime-tier/kill", json={}, headers=auth(tokens.admin))
    assert issue(client, tokens, agent).json()["code"] == "tier_disabled"
    assert (
        client.get("/api/v1/workspaces/acme/calls", headers=auth(tokens.admin)).json()["calls"]
        == []
    )


def test_only_service_tokens_issue_and_claim(
    client: TestClient, tokens: Tokens, agent: str
) -> None:
    for token in (tokens.acme, tokens.admin):
        response = client.post(
            f"/api/v1/workspaces/acme/agents/{agent}/calls", json={}, headers=auth(token)
        )
        assert (response.status_code, response.json()["code"]) == (403, "service_required")
        response = client.post(
            "/api/v1/calls/claim", json={"stream_token": "st1.a.b"}, headers=auth(token)
        )
        assert response.status_code == 403


def test_phone_channels_need_their_signed_webhook(
    client: TestClient, tokens: Tokens, agent: str
) -> None:
    unsigned = issue(client, tokens, agent, channel="twilio")
    assert (unsigned.status_code, unsigned.json()["code"]) == (422, "webhook_required")
    wrong = issue(
        client,
        tokens,
        agent,
        channel="twilio",
        webhook={"provider": "telnyx", "body_base64": "", "timestamp": "1", "signature": "x"},
    )
    assert wrong.json()["code"] == "webhook_required"
    no_secret = issue(
        client,
        tokens,
        agent,
        channel="twilio",
        webhook={
            "provider": "twilio",
            "url": "https://w.example/twiml/x",
            "params": {},
            "signature": "x",
        },
    )
    assert (no_secret.status_code, no_secret.json()["code"]) == (403, "webhook_secret_missing")


def test_the_cap_is_per_workspace_and_only_admins_change_it(
    client: TestClient, tokens: Tokens, agent: str
) -> None:
    refused = client.patch(
        "/api/v1/workspaces/acme/settings",
        json={"max_concurrent_calls": 1000},
        headers=auth(tokens.acme),
    )
    assert (refused.status_code, refused.json()["code"]) == (403, "admin_required")
    set_cap(client, tokens, 2)
    assert [issue(client, tokens, agent).status_code for _ in range(2)] == [201, 201]
    over = issue(client, tokens, agent)
    assert (over.status_code, over.json()["code"]) == (429, "call_limit_reached")
    assert over.headers["retry-after"] == "5"
    assert over.json()["max_concurrent_calls"] == 2
    settings = client.get("/api/v1/workspaces/acme/settings", headers=auth(tokens.acme)).json()
    assert settings["max_concurrent_calls"] == 2


def test_without_the_cap_check_a_workspace_runs_past_its_limit(
    client: TestClient, tokens: Tokens, agent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_cap(client, tokens, 2)
    monkeypatch.setattr(calls_service, "may_start_another", lambda *args: True)
    assert [issue(client, tokens, agent).status_code for _ in range(3)] == [201, 201, 201]


def test_a_lapsed_lease_gives_its_slot_back(client: TestClient, tokens: Tokens, agent: str) -> None:
    """A worker that crashed stops renewing; its calls stop counting when their lease lapses."""
    set_cap(client, tokens, 1)
    first = issue(client, tokens, agent).json()
    claim(client, tokens, first["stream_token"], agent)
    assert issue(client, tokens, agent).status_code == 429
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        session.execute(
            update(Call)
            .where(Call.id == first["call_id"])  # type: ignore[arg-type]
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        session.commit()
    assert issue(client, tokens, agent).status_code == 201
    states = {
        c["id"]: c["state"]
        for c in client.get("/api/v1/workspaces/acme/calls", headers=auth(tokens.acme)).json()[
            "calls"
        ]
    }
    assert states[first["call_id"]] == "lapsed"


def test_foreign_workspaces_cannot_list_calls(
    client: TestClient, tokens: Tokens, agent: str
) -> None:
    issue(client, tokens, agent)
    response = client.get("/api/v1/workspaces/acme/calls", headers=auth(tokens.globex))
    assert response.status_code == 404


def test_a_backend_running_the_call_itself_claims_it_at_issue(
    client: TestClient, tokens: Tokens, agent: str
) -> None:
    started = issue(client, tokens, agent, claim=True)
    assert started.status_code == 201, started.text
    assert (started.json()["state"], started.json()["lease_seconds"]) == ("active", 60)
    replay = claim(client, tokens, started.json()["stream_token"], agent)
    assert (replay.status_code, replay.json()["code"]) == (401, "stream_token_used")
    phone = issue(client, tokens, agent, channel="twilio", claim=True)
    assert phone.status_code == 422
    issued = issue(client, tokens, agent).json()
    assert (issued["state"], issued["lease_seconds"]) == ("issued", None)


def test_calls_and_tokens_come_in_pages(client: TestClient, tokens: Tokens, agent: str) -> None:
    set_cap(client, tokens, 100)
    answers = [issue(client, tokens, agent) for _ in range(7)]
    assert {a.status_code for a in answers} == {201}, answers[-1].text
    issued = [a.json()["call_id"] for a in answers]
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/v1/workspaces/acme/calls", params=params, headers=auth(tokens.acme))
        assert page.status_code == 200, page.text
        seen += [c["id"] for c in page.json()["calls"]]
        if (cursor := page.json()["next_cursor"]) is None:
            break
    assert seen == list(reversed(issued))  # newest first, each once
    listed, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/v1/tokens", params=params, headers=auth(tokens.admin)).json()
        listed += [t["id"] for t in page["tokens"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert listed == sorted(set(listed)) and len(listed) >= 4


def test_an_unclaimed_call_is_released_and_a_claimed_one_is_left_running(
    client: TestClient, tokens: Tokens, agent: str
) -> None:
    waiting = issue(client, tokens, agent).json()
    assert waiting["engine"] == "grok-realtime"
    released = client.post(
        f"/api/v1/calls/{waiting['call_id']}/release",
        json={"reason": "unclaimed"},
        headers=auth(tokens.service),
    )
    assert released.status_code == 200, released.text
    assert (released.json()["state"], released.json()["end_reason"]) == ("ended", "unclaimed")
    late = claim(client, tokens, waiting["stream_token"], agent)
    assert (late.status_code, late.json()["code"]) == (401, "stream_token_used")

    running = issue(client, tokens, agent).json()
    claim(client, tokens, running["stream_token"], agent).raise_for_status()
    refused = client.post(
        f"/api/v1/calls/{running['call_id']}/release", json={}, headers=auth(tokens.service)
    )
    assert (refused.status_code, refused.json()["code"]) == (409, "call_claimed")
    listed = client.get("/api/v1/workspaces/acme/calls", headers=auth(tokens.acme)).json()
    assert listed["active"] == 1
    workspace_token = client.post(
        f"/api/v1/calls/{running['call_id']}/release", json={}, headers=auth(tokens.acme)
    )
    assert workspace_token.status_code == 403


def test_without_the_claimed_check_a_release_ends_a_running_call(
    client: TestClient, tokens: Tokens, agent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = issue(client, tokens, agent).json()
    claim(client, tokens, running["stream_token"], agent).raise_for_status()
    monkeypatch.setattr(calls_service, "claimable_states", lambda: ("issued", "active"))
    released = client.post(
        f"/api/v1/calls/{running['call_id']}/release", json={}, headers=auth(tokens.service)
    )
    assert released.status_code == 200 and released.json()["state"] == "ended"


def test_one_provider_call_id_is_one_call(client: TestClient, tokens: Tokens, agent: str) -> None:
    first = issue(client, tokens, agent, provider_call_id="CA-once")
    again = issue(client, tokens, agent, provider_call_id="CA-once")
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json() | {"replayed": True} == again.json()  # same call, same token
    assert first.json()["replayed"] is False
    listed = client.get("/api/v1/workspaces/acme/calls", headers=auth(tokens.acme)).json()
    assert (len(listed["calls"]), listed["active"]) == (1, 1)
    claim(client, tokens, first.json()["stream_token"], agent).raise_for_status()
    used = issue(client, tokens, agent, provider_call_id="CA-once")
    assert (used.status_code, used.json()["code"]) == (409, "provider_call_used")
    other = client.post(
        "/api/v1/workspaces/acme/agents",
        json={"name": "Bea", "pricing_tier": "grok-realtime", "voice": "Eve"},
        headers=auth(tokens.admin),
    ).json()["id"]
    elsewhere = issue(client, tokens, other, provider_call_id="CA-once")
    assert (elsewhere.status_code, elsewhere.json()["code"]) == (409, "provider_call_other_agent")
    assert issue(client, tokens, agent, provider_call_id="CA-other").status_code == 201
