"""Flags, cohorts, stages and the kill switch over REST; the catalogue knows the gate."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tokens, auth

FLAG = "/api/v1/flags/grok-realtime-tier"


def decision(client: TestClient, token: str, workspace: str) -> dict[str, Any]:
    response = client.get(
        f"{FLAG}/decision", params={"workspace_id": workspace}, headers=auth(token)
    )
    assert response.status_code == 200, response.text
    return response.json()


def enabled_for(client: TestClient, tokens: Tokens, workspaces: list[str]) -> set[str]:
    return {w for w in workspaces if decision(client, tokens.admin, w)["enabled"]}


def grok_tier(client: TestClient, token: str) -> dict[str, Any]:
    tiers = client.get("/api/v1/tiers", headers=auth(token)).json()["tiers"]
    return next(t for t in tiers if t["id"] == "grok-realtime")


@pytest.fixture
def cohorts(client: TestClient, tokens: Tokens) -> None:
    put = client.put(
        "/api/v1/cohorts/internal", json={"members": ["acme"]}, headers=auth(tokens.admin)
    )
    assert put.status_code == 200, put.text


def test_seeded_flag_starts_in_internal_alpha(client: TestClient, tokens: Tokens) -> None:
    flag = client.get(FLAG, headers=auth(tokens.admin)).json()
    assert (flag["stage"], flag["killed"], flag["internal_cohorts"]) == (
        "internal",
        False,
        ["internal"],
    )
    assert flag["definition"]["name"] == "grok-realtime-tier"
    names = [
        c["name"]
        for c in client.get("/api/v1/cohorts", headers=auth(tokens.admin)).json()["cohorts"]
    ]
    assert names == ["beta-1", "beta-2", "internal"]


def test_stage_walk_with_cohorts(client: TestClient, tokens: Tokens, cohorts: None) -> None:
    everyone = ["acme", "globex"]
    assert enabled_for(client, tokens, everyone) == {"acme"}
    assert (
        client.put(
            "/api/v1/cohorts/beta-1", json={"members": ["globex"]}, headers=auth(tokens.admin)
        ).status_code
        == 200
    )
    assert enabled_for(client, tokens, everyone) == {"acme"}
    assert (
        client.put(f"{FLAG}/stage", json={"stage": "beta"}, headers=auth(tokens.admin)).status_code
        == 200
    )
    assert enabled_for(client, tokens, everyone) == {"acme", "globex"}
    assert (
        client.put(f"{FLAG}/stage", json={"stage": "ga"}, headers=auth(tokens.admin)).status_code
        == 200
    )
    assert enabled_for(client, tokens, [*everyone, "anyone-else"]) == {
        "acme",
        "globex",
        "anyone-else",
    }
    assert (
        client.put(f"{FLAG}/stage", json={"stage": "off"}, headers=auth(tokens.admin)).status_code
        == 200
    )
    assert enabled_for(client, tokens, everyone) == set()
    off = decision(client, tokens.admin, "acme")
    assert off["code"] == "flag_off"


def test_percentage_is_sticky_per_workspace(
    client: TestClient, tokens: Tokens, cohorts: None
) -> None:
    client.put(f"{FLAG}/stage", json={"stage": "beta"}, headers=auth(tokens.admin))
    others = [f"ws-{i:02d}" for i in range(40)]
    assert enabled_for(client, tokens, others) == set()
    client.put(f"{FLAG}/rollout", json={"percentage": 30}, headers=auth(tokens.admin))
    at_30 = enabled_for(client, tokens, others)
    client.put(f"{FLAG}/rollout", json={"percentage": 60}, headers=auth(tokens.admin))
    at_60 = enabled_for(client, tokens, others)
    assert 0 < len(at_30) < len(at_60) < len(others)
    assert at_30 <= at_60  # growing the percentage never drops a workspace that was in
    client.put(f"{FLAG}/rollout", json={"percentage": 100}, headers=auth(tokens.admin))
    assert enabled_for(client, tokens, others) == set(others)


def test_kill_switch_remembers_the_stage(client: TestClient, tokens: Tokens, cohorts: None) -> None:
    client.put(f"{FLAG}/stage", json={"stage": "ga"}, headers=auth(tokens.admin))
    killed = client.post(
        f"{FLAG}/kill", params={"reason": "latency spike"}, headers=auth(tokens.admin)
    )
    assert killed.status_code == 200
    assert (killed.json()["stage"], killed.json()["killed"]) == ("ga", True)
    assert enabled_for(client, tokens, ["acme", "globex"]) == set()
    assert decision(client, tokens.admin, "acme")["code"] == "flag_killed"
    blocked = client.put(f"{FLAG}/stage", json={"stage": "beta"}, headers=auth(tokens.admin))
    assert blocked.status_code == 409
    assert blocked.json()["code"] == "flag_killed"
    resumed = client.post(f"{FLAG}/resume", headers=auth(tokens.admin))
    assert (resumed.json()["stage"], resumed.json()["killed"]) == ("ga", False)
    assert enabled_for(client, tokens, ["acme", "globex"]) == {"acme", "globex"}
    assert (
        client.post(f"{FLAG}/resume", headers=auth(tokens.admin)).json()["code"]
        == "flag_not_killed"
    )

    audit = client.get(
        "/api/v1/audit",
        params={"target": "grok-realtime-tier", "action": "flag"},
        headers=auth(tokens.admin),
    ).json()
    actions = [e["action"] for e in audit["entries"]]
    assert actions[:3] == ["flag.resume", "flag.kill", "flag.stage"]
    kill_entry = audit["entries"][1]
    assert kill_entry["before"]["killed"] is False and kill_entry["after"]["killed"] is True
    assert kill_entry["details"] == {"reason": "latency spike"}
    assert kill_entry["actor"].startswith("token:")


def test_bad_requests_change_nothing(client: TestClient, tokens: Tokens, cohorts: None) -> None:
    before = client.get(FLAG, headers=auth(tokens.admin)).json()
    unknown = client.put(
        "/api/v1/flags/nope/stage", json={"stage": "beta"}, headers=auth(tokens.admin)
    )
    assert unknown.status_code == 404 and unknown.json()["code"] == "flag_not_found"
    bad_stage = client.put(f"{FLAG}/stage", json={"stage": "gamma"}, headers=auth(tokens.admin))
    assert bad_stage.status_code == 422
    bad_cohort = client.put(
        "/api/v1/cohorts/beta-1",
        json={"members": ["globex", "ghost-co"]},
        headers=auth(tokens.admin),
    )
    assert bad_cohort.status_code == 422
    assert (
        bad_cohort.json()["code"] == "unknown_workspace"
        and "ghost-co" in bad_cohort.json()["detail"]
    )
    assert client.get("/api/v1/cohorts/beta-1", headers=auth(tokens.admin)).json()["members"] == []
    bad_rollout = client.put(
        f"{FLAG}/rollout", json={"percentage": 101}, headers=auth(tokens.admin)
    )
    assert bad_rollout.status_code == 422
    unknown_cohort = client.put(
        f"{FLAG}/rollout", json={"beta_cohorts": ["nobody"]}, headers=auth(tokens.admin)
    )
    assert unknown_cohort.status_code == 422 and unknown_cohort.json()["code"] == "unknown_cohort"
    assert client.get(FLAG, headers=auth(tokens.admin)).json() == before
    for token in (tokens.acme, tokens.service):
        assert (
            client.put(f"{FLAG}/stage", json={"stage": "ga"}, headers=auth(token)).status_code
            == 403
        )
        assert client.post(f"{FLAG}/kill", headers=auth(token)).status_code == 403


def test_if_match_guards_flag_writes(client: TestClient, tokens: Tokens) -> None:
    etag = client.get(FLAG, headers=auth(tokens.admin)).headers["etag"]
    assert (
        client.get(FLAG, headers={**auth(tokens.admin), "If-None-Match": etag}).status_code == 304
    )
    first = client.put(
        f"{FLAG}/stage", json={"stage": "beta"}, headers={**auth(tokens.admin), "If-Match": etag}
    )
    assert first.status_code == 200
    stale = client.post(f"{FLAG}/kill", headers={**auth(tokens.admin), "If-Match": etag})
    assert stale.status_code == 412
    assert client.get(FLAG, headers=auth(tokens.admin)).json()["killed"] is False


def test_catalogue_knows_the_gate(client: TestClient, tokens: Tokens, cohorts: None) -> None:
    assert grok_tier(client, tokens.acme)["available"] is True
    outside = grok_tier(client, tokens.globex)
    assert outside["available"] is False
    assert outside["unavailable_code"] == "tier_not_enabled"
    assert "internal alpha" in outside["unavailable_reason"]
    premium = next(
        t
        for t in client.get("/api/v1/tiers", headers=auth(tokens.globex)).json()["tiers"]
        if t["id"] == "premium"
    )
    assert premium["available"] is True
    # Anonymous readers get the catalogue without availability; admins can ask per workspace.
    assert grok_tier(client, tokens.admin)["available"] is None
    per_ws = client.get(
        "/api/v1/tiers/grok-realtime", params={"workspace_id": "globex"}, headers=auth(tokens.admin)
    ).json()
    assert per_ws["available"] is False
    assert (
        client.get(
            "/api/v1/tiers", params={"workspace_id": "globex"}, headers=auth(tokens.acme)
        ).status_code
        == 404
    )

    client.put("/api/v1/cohorts/beta-1", json={"members": ["globex"]}, headers=auth(tokens.admin))
    client.put(f"{FLAG}/stage", json={"stage": "beta"}, headers=auth(tokens.admin))
    assert grok_tier(client, tokens.globex)["available"] is True
    client.post(f"{FLAG}/kill", headers=auth(tokens.admin))
    killed = grok_tier(client, tokens.globex)
    assert (killed["available"], killed["unavailable_code"]) == (False, "tier_disabled")


def test_client_api_serves_unleash_format(
    client: TestClient, tokens: Tokens, cohorts: None
) -> None:
    assert client.get("/api/client/features").status_code == 401
    assert (
        client.get("/api/client/features", headers={"Authorization": tokens.acme}).status_code
        == 401
    )
    response = client.get("/api/client/features", headers={"Authorization": tokens.service})
    assert response.status_code == 200
    document = response.json()
    assert document["version"] == 2
    assert [f["name"] for f in document["features"]] == ["grok-realtime-tier"]
    constraint = document["features"][0]["strategies"][0]["constraints"][0]
    assert (constraint["contextName"], constraint["values"]) == ("workspaceId", ["acme"])
    etag = response.headers["etag"]
    assert (
        client.get(
            "/api/client/features", headers={"Authorization": tokens.service, "If-None-Match": etag}
        ).status_code
        == 304
    )
    client.put(f"{FLAG}/stage", json={"stage": "ga"}, headers=auth(tokens.admin))
    changed = client.get(
        "/api/client/features", headers={"Authorization": tokens.service, "If-None-Match": etag}
    )
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert (
        client.post(
            "/api/client/register", json={"appName": "x"}, headers={"Authorization": tokens.service}
        ).status_code
        == 202
    )
    assert (
        client.post(
            "/api/client/metrics", json={"bucket": {}}, headers={"Authorization": tokens.service}
        ).status_code
        == 202
    )


def test_export_import_round_trip(client: TestClient, tokens: Tokens, cohorts: None) -> None:
    from sqlmodel import Session

    from control_plane.rollout import service

    client.put(f"{FLAG}/stage", json={"stage": "beta"}, headers=auth(tokens.admin))
    client.put(f"{FLAG}/rollout", json={"percentage": 20}, headers=auth(tokens.admin))
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        exported = service.export_definitions(session)
    client.put(f"{FLAG}/stage", json={"stage": "off"}, headers=auth(tokens.admin))
    client.put("/api/v1/cohorts/internal", json={"members": []}, headers=auth(tokens.admin))
    with Session(engine) as session:
        service.import_definitions(session, client.app.state.flag_gate, exported, actor="test")  # type: ignore[attr-defined]
        session.commit()
        assert service.export_definitions(session) == exported
    assert decision(client, tokens.admin, "acme")["enabled"] is True
