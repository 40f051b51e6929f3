"""REST for the launch's success metrics: rating a call once, transcripts kept only with the
workspace's opt-in and reviewed against a reference, the insights an admin reads, and release
plans set, checked and resumed over REST and the CLI's services."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tokens, auth

GROK_AGENT = {"name": "Ava", "pricing_tier": "grok-realtime", "voice": "marin"}
PLAN = {
    "milestones": [
        {"name": "internal alpha", "stage": "internal", "min_dwell_hours": 24, "min_calls": 5},
        {"name": "beta 10 %", "stage": "beta", "beta_percentage": 10},
        {"name": "GA", "stage": "ga"},
    ]
}


@pytest.fixture
def grok(client: TestClient, tokens: Tokens) -> str:
    """acme may use grok-realtime, has a key and a Grok agent; its id."""
    admin = auth(tokens.admin)
    assert client.put(
        "/api/v1/cohorts/internal", json={"members": ["acme"]}, headers=admin
    ).is_success
    assert client.put(
        "/api/v1/workspaces/acme/settings/api-keys",
        json={"xai_api_key": "xai-" + "InsightsTestKey0123456789" + "abcd"},
        headers=auth(tokens.acme),
    ).is_success
    agent = client.post(
        "/api/v1/workspaces/acme/agents", json=GROK_AGENT, headers=auth(tokens.acme)
    )
    assert agent.status_code == 201, agent.text
    return str(agent.json()["id"])


def call(client: TestClient, tokens: Tokens, agent: str, **report: Any) -> str:
    """An issued call of acme's agent, run and reported."""
    issued = client.post(
        f"/api/v1/workspaces/acme/agents/{agent}/calls",
        json={"channel": "api", "claim": True},
        headers=auth(tokens.service),
    )
    assert issued.status_code == 201, issued.text
    call_id = str(issued.json()["call_id"])
    body = {
        "call_id": call_id,
        "end_reason": "caller_hangup",
        "completed": True,
        "duration_ms": 120_000,
    }
    posted = client.post(
        "/api/v1/telemetry/calls", json=body | report, headers=auth(tokens.service)
    )
    assert posted.status_code == 200, posted.text
    return call_id


def test_without_the_opt_in_check_a_transcript_is_stored(
    client: TestClient, tokens: Tokens, grok: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The twin of the opt-in: with the check switched off, a workspace that never opted in
    has its callers' words stored."""
    from control_plane.insights import service as insights
    from control_plane.workspaces.models import WorkspaceSettings

    monkeypatch.setattr(
        insights,
        "_transcript_opt_in",
        lambda session, workspace_id: WorkspaceSettings(
            workspace_id=workspace_id, keep_transcripts=True
        ),
    )
    unkept = call(client, tokens, grok, transcript=LINES)
    stored = client.get(f"/api/v1/calls/{unkept}/transcript", headers=auth(tokens.acme))
    assert stored.status_code == 200 and stored.json()["entries"] == LINES


def test_without_the_workspace_check_another_workspace_reads_a_transcript(
    client: TestClient, tokens: Tokens, grok: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The twin of the 404 globex gets above: without the check it reads acme's words."""
    from control_plane.calls.models import Call
    from control_plane.insights import service as insights

    client.patch(
        "/api/v1/workspaces/acme/settings",
        json={"keep_transcripts": True},
        headers=auth(tokens.acme),
    )
    kept = call(client, tokens, grok, transcript=LINES)
    monkeypatch.setattr(
        insights, "_visible_call", lambda session, principal, call_id: session.get(Call, call_id)
    )
    read = client.get(f"/api/v1/calls/{kept}/transcript", headers=auth(tokens.globex))
    assert read.status_code == 200 and read.json()["entries"] == LINES


def test_a_call_is_rated_once(client: TestClient, tokens: Tokens, grok: str) -> None:
    call_id = call(client, tokens, grok)
    path = f"/api/v1/calls/{call_id}/feedback"
    rated = client.post(
        path, json={"score": 9, "comment": "Quick and clear."}, headers=auth(tokens.acme)
    )
    assert rated.status_code == 201, rated.text
    assert (rated.json()["score"], rated.json()["tier"]) == (9, "grok-realtime")
    again = client.post(path, json={"score": 2}, headers=auth(tokens.service))
    assert (again.status_code, again.json()["code"]) == (409, "feedback_exists")
    foreign = client.post(
        f"/api/v1/calls/{call(client, tokens, grok)}/feedback",
        json={"score": 0},
        headers=auth(tokens.globex),
    )
    assert (foreign.status_code, foreign.json()["code"]) == (404, "call_not_found")
    for bad in ({"score": 11}, {"score": -1}, {"score": 5, "comment": "x" * 1001}, {"score": "9"}):
        assert client.post(path, json=bad, headers=auth(tokens.acme)).status_code == 422
    nps = client.get("/api/v1/insights/nps", headers=auth(tokens.admin)).json()
    assert nps["per_tier"]["grok-realtime"]["promoters"] == 1
    assert nps["per_tier"]["grok-realtime"]["nps"] == {
        "value": 100.0,
        "target": 40.0,
        "ok": True,
        "samples": 1,
    }


LINES = [
    {"role": "caller", "text": "Hello, where is my order?"},
    {"role": "agent", "text": "Let me check that for you."},
]


def test_transcripts_are_kept_only_with_the_opt_in(
    client: TestClient, tokens: Tokens, grok: str
) -> None:
    settings = client.get("/api/v1/workspaces/acme/settings", headers=auth(tokens.acme)).json()
    assert (settings["keep_transcripts"], settings["transcript_retention_days"]) == (False, 30)
    unkept = call(client, tokens, grok, transcript=LINES)
    missing = client.get(f"/api/v1/calls/{unkept}/transcript", headers=auth(tokens.acme))
    assert (missing.status_code, missing.json()["code"]) == (404, "transcript_not_found")

    opted = client.patch(
        "/api/v1/workspaces/acme/settings",
        json={"keep_transcripts": True, "transcript_retention_days": 7},
        headers=auth(tokens.acme),
    )
    assert opted.json()["keep_transcripts"] is True
    kept = call(client, tokens, grok, transcript=LINES)
    transcript = client.get(f"/api/v1/calls/{kept}/transcript", headers=auth(tokens.acme)).json()
    assert transcript["entries"] == LINES and transcript["accuracy"] is None
    assert (
        client.get(f"/api/v1/calls/{kept}/transcript", headers=auth(tokens.globex)).status_code
        == 404
    )

    reviewed = client.put(
        f"/api/v1/calls/{kept}/transcript/reference",
        json={"text": "hello where is my other order"},
        headers=auth(tokens.acme),
    )
    assert reviewed.status_code == 200, reviewed.text
    assert reviewed.json()["accuracy"] == pytest.approx(5 / 6)  # one word missed of six
    empty = client.put(
        f"/api/v1/calls/{kept}/transcript/reference", json={"text": "?!"}, headers=auth(tokens.acme)
    )
    assert (empty.status_code, empty.json()["code"]) == (422, "empty_reference")
    accuracy = client.get("/api/v1/insights/accuracy", headers=auth(tokens.admin)).json()
    assert accuracy["per_tier"]["grok-realtime"]["reviewed_calls"] == 1
    assert accuracy["per_tier"]["grok-realtime"]["accuracy"]["ok"] is False  # 83 % < 90 %

    purged = client.delete("/api/v1/workspaces/acme/transcripts", headers=auth(tokens.acme))
    assert purged.json() == {"deleted": 1}
    assert (
        client.get(f"/api/v1/calls/{kept}/transcript", headers=auth(tokens.acme)).status_code == 404
    )


def test_adoption_and_usage_read_the_catalogue_and_the_calls(
    client: TestClient, tokens: Tokens, grok: str
) -> None:
    for _ in range(3):
        created = client.post(
            "/api/v1/workspaces/acme/agents",
            json={"name": "Max", "pricing_tier": "premium", "voice": "cedar"},
            headers=auth(tokens.acme),
        )
        assert created.status_code == 201
    call(client, tokens, grok)
    adoption = client.get("/api/v1/insights/adoption", headers=auth(tokens.admin)).json()
    assert (adoption["new_agents"], adoption["new_agents_on_grok"]) == (4, 1)
    assert adoption["grok_share_of_new_agents"]["value"] == 0.25
    assert adoption["active_agents_per_tier"] == {"grok-realtime": 1}
    usage = client.get("/api/v1/insights/usage", headers=auth(tokens.admin)).json()
    assert usage["per_tier"]["grok-realtime"] == {"calls": 1, "minutes": 2.0, "cost": 0.1}
    acme = usage["per_workspace"][0]
    assert acme["cost_on_grok"] == 0.1 and acme["moving_to_grok_costs"] == 0.0
    forbidden = client.get("/api/v1/insights/usage", headers=auth(tokens.acme))
    assert forbidden.status_code == 403


def test_a_release_plan_over_rest(client: TestClient, tokens: Tokens) -> None:
    admin = auth(tokens.admin)
    path = "/api/v1/flags/grok-realtime-tier/plan"
    assert client.get(path, headers=admin).json()["code"] == "plan_not_found"
    backwards = {"milestones": list(reversed(PLAN["milestones"]))}
    refused = client.put(path, json=backwards, headers=admin)
    assert (refused.status_code, refused.json()["code"]) == (422, "plan_not_forward")
    saved = client.put(path, json=PLAN, headers=admin)
    assert saved.status_code == 200, saved.text
    plan = saved.json()
    assert [s["state"] for s in plan["timeline"]] == ["current", "next", "next"]
    flag = client.get("/api/v1/flags/grok-realtime-tier", headers=admin).json()
    assert flag["stage"] == "internal"  # moved to the first milestone
    checked = client.post(f"{path}/check", headers=admin).json()
    assert checked["outcome"] == "waiting"
    assert "dwell" in checked["reason"] and "calls: no calls; 5 needed" in checked["reason"]
    assert client.post(f"{path}/resume", headers=admin).json()["code"] == "plan_not_held"
    client.put("/api/v1/flags/grok-realtime-tier/stage", json={"stage": "ga"}, headers=admin)
    held = client.post(f"{path}/check", headers=admin).json()
    assert held["outcome"] == "held" and "moved away" in held["reason"]
    resumed = client.post(f"{path}/resume", headers=admin).json()
    assert resumed["status"] == "waiting" and resumed["current"] == 2  # stands at GA
    assert client.post(f"{path}/check", headers=admin).json()["outcome"] == "done"
    audit = client.get("/api/v1/audit?target=grok-realtime-tier", headers=admin).json()["entries"]
    assert {"flag.plan_set", "flag.plan_held", "flag.plan_resume"} <= {e["action"] for e in audit}


def issued_only(client: TestClient, tokens: Tokens, agent: str) -> str:
    issued = client.post(
        f"/api/v1/workspaces/acme/agents/{agent}/calls",
        json={"channel": "api"},
        headers=auth(tokens.service),
    )
    assert issued.status_code == 201, issued.text
    return str(issued.json()["call_id"])


def test_a_call_that_never_connected_cannot_be_rated(
    client: TestClient, tokens: Tokens, grok: str
) -> None:
    call_id = issued_only(client, tokens, grok)
    rated = client.post(
        f"/api/v1/calls/{call_id}/feedback", json={"score": 10}, headers=auth(tokens.acme)
    )
    assert (rated.status_code, rated.json()["code"]) == (409, "call_not_connected")
    nps = client.get("/api/v1/insights/nps", headers=auth(tokens.admin)).json()
    assert "grok-realtime" not in nps["per_tier"] or (
        nps["per_tier"]["grok-realtime"]["promoters"] == 0
    )


def test_without_the_connected_check_one_unconnected_rating_makes_nps_100(
    client: TestClient, tokens: Tokens, grok: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_plane.insights import service as insights

    monkeypatch.setattr(insights, "call_connected", lambda session, call: True)
    call_id = issued_only(client, tokens, grok)
    rated = client.post(
        f"/api/v1/calls/{call_id}/feedback", json={"score": 10}, headers=auth(tokens.acme)
    )
    assert rated.status_code == 201
    nps = client.get("/api/v1/insights/nps", headers=auth(tokens.admin)).json()
    assert nps["per_tier"]["grok-realtime"]["nps"]["value"] == 100.0


def kept_transcript(client: TestClient, tokens: Tokens, agent: str, days_ago: int) -> str:
    """A transcript acme keeps (7-day retention), stored `days_ago` days ago."""
    from datetime import timedelta

    from sqlmodel import Session

    from control_plane.insights.models import CallTranscript

    client.patch(
        "/api/v1/workspaces/acme/settings",
        json={"keep_transcripts": True, "transcript_retention_days": 7},
        headers=auth(tokens.acme),
    ).raise_for_status()
    call_id = call(client, tokens, agent, transcript=LINES)
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        transcript = session.get(CallTranscript, call_id)
        assert transcript is not None
        transcript.created_at -= timedelta(days=days_ago)
        transcript.kept_until -= timedelta(days=days_ago)
        session.add(transcript)
        session.commit()
    return call_id


def lower_retention(client: TestClient, tokens: Tokens, days: int) -> None:
    client.patch(
        "/api/v1/workspaces/acme/settings",
        json={"transcript_retention_days": days},
        headers=auth(tokens.acme),
    ).raise_for_status()


def test_a_shorter_retention_applies_to_transcripts_already_kept(
    client: TestClient, tokens: Tokens, grok: str
) -> None:
    old = kept_transcript(client, tokens, grok, days_ago=3)
    recent = kept_transcript(client, tokens, grok, days_ago=0)
    lower_retention(client, tokens, 2)
    gone = client.get(f"/api/v1/calls/{old}/transcript", headers=auth(tokens.acme))
    assert (gone.status_code, gone.json()["code"]) == (404, "transcript_not_found")
    kept = client.get(f"/api/v1/calls/{recent}/transcript", headers=auth(tokens.acme)).json()
    left = datetime.fromisoformat(kept["kept_until"]) - datetime.now(UTC)
    assert timedelta(days=1, hours=23) < left <= timedelta(days=2)


def test_without_applying_it_kept_transcripts_keep_the_old_retention(
    client: TestClient, tokens: Tokens, grok: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_plane.insights import service as insights

    monkeypatch.setattr(insights, "apply_retention", lambda *args, **kwargs: 0)
    old = kept_transcript(client, tokens, grok, days_ago=3)
    lower_retention(client, tokens, 2)
    kept = client.get(f"/api/v1/calls/{old}/transcript", headers=auth(tokens.acme))
    assert kept.status_code == 200  # three days old under a two-day retention, still there
    left = datetime.fromisoformat(kept.json()["kept_until"]) - datetime.now(UTC)
    assert left > timedelta(days=3)
