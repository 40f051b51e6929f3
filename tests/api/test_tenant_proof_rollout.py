"""No single workspace moves a rollout. Two attacks, replayed with only what a workspace has (its
own token, its own agent, its own key, the calls it places), each beside a twin with the rule
switched off where the attack succeeds:

- walking a release plan to GA with its own calls, its own 10/10 ratings and references it set
  itself to the very words xAI heard;
- switching the tier off for everyone by making its own calls fail (a key xAI refuses, or a
  failure that looks like the provider's).

The calls are issued and reported through the API as the worker and the runtime do (the
service token); everything the attacker does is done with the attacker's workspace token."""

import random
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from control_plane.auth.principal import Principal
from control_plane.insights import service as insights_service
from control_plane.telemetry import faults
from tests.api.test_telemetry import BETA_1, BETA_2, INTERNAL, send, stage, synthetic_calls
from tests.api.test_telemetry import beta as beta  # the fixture, asked for by name
from tests.conftest import Tokens, auth

FLAG = "grok-realtime-tier"
GROK_AGENT = {"name": "Ava", "pricing_tier": "grok-realtime", "voice": "Ara"}
HEARD = "where is my order number forty two please"
GATES = {"nps_min": 40, "nps_min_responses": 3, "accuracy_min": 0.9, "accuracy_min_reviews": 3}


def plan(min_workspaces: int) -> dict[str, Any]:
    """The plan of the report: internal → beta 10 % → GA, 3 calls, NPS ≥ 40 on 3 ratings,
    accuracy ≥ 90 % on 3 reviews, no dwell."""
    step = {"min_dwell_hours": 0, "min_calls": 3, "min_workspaces": min_workspaces, "gates": GATES}
    return {
        "milestones": [
            {"name": "internal", "stage": "internal", **step},
            {"name": "beta 10 %", "stage": "beta", "beta_percentage": 10, **step},
            {"name": "GA", "stage": "ga"},
        ]
    }


class Attacker:
    """acme, on its own: a Grok agent, its own key, transcripts kept."""

    def __init__(self, client: TestClient, tokens: Tokens) -> None:
        self.client, self.tokens = client, tokens
        own = auth(tokens.acme)
        assert client.put(
            "/api/v1/workspaces/acme/settings/api-keys",
            json={"xai_api_key": "xai-" + "TenantProofTestKey012345" + "abcd"},
            headers=own,
        ).is_success
        assert client.patch(
            "/api/v1/workspaces/acme/settings", json={"keep_transcripts": True}, headers=own
        ).is_success
        created = client.post("/api/v1/workspaces/acme/agents", json=GROK_AGENT, headers=own)
        assert created.status_code == 201, created.text
        self.agent = str(created.json()["id"])

    def places_a_call(self) -> str:
        """A call to its own agent, issued and reported as the worker and runtime would."""
        issued = self.client.post(
            f"/api/v1/workspaces/acme/agents/{self.agent}/calls",
            json={"channel": "api", "claim": True},
            headers=auth(self.tokens.service),
        )
        assert issued.status_code == 201, issued.text
        call_id = str(issued.json()["call_id"])
        report = {
            "call_id": call_id,
            "end_reason": "caller_hangup",
            "completed": True,
            "duration_ms": 60_000,
            "time_to_first_audio_ms": 600,
            "transcript": [{"role": "caller", "text": HEARD}],
        }
        posted = self.client.post(
            "/api/v1/telemetry/calls", json=report, headers=auth(self.tokens.service)
        )
        assert posted.status_code == 200, posted.text
        return call_id

    def rates_and_reviews(self, call_id: str) -> None:
        own = auth(self.tokens.acme)
        rated = self.client.post(
            f"/api/v1/calls/{call_id}/feedback", json={"score": 10}, headers=own
        )
        assert rated.status_code == 201, rated.text
        reviewed = self.client.put(
            f"/api/v1/calls/{call_id}/transcript/reference", json={"text": HEARD}, headers=own
        )
        assert reviewed.status_code == 200, reviewed.text

    def walks_the_plan(self) -> list[tuple[str, str]]:
        """Three calls, rated and reviewed, then the plan's check (as the scheduler runs it);
        twice. Each check's (outcome, reason)."""
        checks = []
        for _ in range(2):
            for _ in range(3):
                self.rates_and_reviews(self.places_a_call())
            checked = self.client.post(
                f"/api/v1/flags/{FLAG}/plan/check", headers=auth(self.tokens.admin)
            )
            assert checked.status_code == 200, checked.text
            checks.append((checked.json()["outcome"], checked.json()["reason"]))
        return checks


@pytest.fixture
def attacker(client: TestClient, tokens: Tokens) -> Attacker:
    assert client.put(
        "/api/v1/cohorts/internal", json={"members": ["acme"]}, headers=auth(tokens.admin)
    ).is_success
    assert client.put(
        f"/api/v1/flags/{FLAG}/rollout",
        json={"internal_cohorts": ["internal"]},
        headers=auth(tokens.admin),
    ).is_success
    return Attacker(client, tokens)


def put_plan(client: TestClient, tokens: Tokens, min_workspaces: int) -> None:
    response = client.put(
        f"/api/v1/flags/{FLAG}/plan", json=plan(min_workspaces), headers=auth(tokens.admin)
    )
    assert response.status_code == 200, response.text


def references_count_whoever_sets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule that only the product team's references count, switched off."""
    set_reference = insights_service.set_reference

    def as_if_independent(session: Any, principal: Principal, *args: Any, **kwargs: Any) -> Any:
        transcript = set_reference(session, principal, *args, **kwargs)
        transcript.reference_independent = True
        return transcript

    monkeypatch.setattr(insights_service, "set_reference", as_if_independent)


def test_one_workspace_cannot_walk_a_release_plan(
    client: TestClient, tokens: Tokens, attacker: Attacker
) -> None:
    put_plan(client, tokens, min_workspaces=2)
    checks = attacker.walks_the_plan()
    assert [outcome for outcome, _ in checks] == ["waiting", "waiting"]
    reason = checks[-1][1]
    assert "calls: 6 calls from 1 workspace; largest share 100 %" in reason
    assert "NPS: 6 ratings from 1 workspace" in reason
    assert "accuracy: no reviewed calls" in reason  # its own references do not count
    assert stage(client, tokens) == "internal"
    assert (
        client.get(
            "/api/v1/audit", params={"action": "flag.auto_advance"}, headers=auth(tokens.admin)
        ).json()["entries"]
        == []
    )


def test_its_own_references_alone_do_not_pass_the_accuracy_gate(
    client: TestClient, tokens: Tokens, attacker: Attacker
) -> None:
    """With the per-workspace rule off (a plan that pools every workspace), the references
    a workspace sets on its own calls still count for nothing: the plan waits on accuracy."""
    put_plan(client, tokens, min_workspaces=1)
    checks = attacker.walks_the_plan()
    assert [outcome for outcome, _ in checks] == ["waiting", "waiting"]
    assert checks[-1][1] == "accuracy: no reviewed calls (product-team reviews); 3 needed"
    assert stage(client, tokens) == "internal"


def test_with_the_rule_off_one_workspace_walks_the_plan_to_ga(
    client: TestClient, tokens: Tokens, attacker: Attacker, monkeypatch: pytest.MonkeyPatch
) -> None:
    references_count_whoever_sets_them(monkeypatch)
    put_plan(client, tokens, min_workspaces=1)
    checks = attacker.walks_the_plan()
    assert [outcome for outcome, _ in checks] == ["advanced", "advanced"]
    assert stage(client, tokens) == "ga"  # GA for every workspace, on one customer's word


def test_the_rule_alone_holds_the_plan_even_if_its_references_counted(
    client: TestClient, tokens: Tokens, attacker: Attacker, monkeypatch: pytest.MonkeyPatch
) -> None:
    references_count_whoever_sets_them(monkeypatch)
    put_plan(client, tokens, min_workspaces=2)
    assert [outcome for outcome, _ in attacker.walks_the_plan()] == ["waiting", "waiting"]
    assert stage(client, tokens) == "internal"


# --- switching the tier off for everyone ------------------------------------------------------


def failing(calls: list[dict[str, Any]], workspace: str, end_reason: str) -> list[dict[str, Any]]:
    """The attacker's calls: all of them its own workspace's, all failed."""
    return [
        {**call, "workspace_id": workspace, "completed": False, "end_reason": end_reason}
        for call in calls
    ]


def attack_the_guard(
    client: TestClient, tokens: Tokens, end_reason: str, *, min_workspaces: int = 2
) -> dict[str, Any]:
    """Healthy calls from every beta workspace, then 70 failed calls from one (b1-3): the
    guard's defaults otherwise (50 calls)."""
    patched = client.patch(
        f"/api/v1/rollouts/{FLAG}/guard",
        json={"min_calls": 50, "min_workspaces": min_workspaces},
        headers=auth(tokens.admin),
    )
    assert patched.status_code == 200, patched.text
    rng = random.Random(33)
    send(client, tokens, synthetic_calls(200, INTERNAL + BETA_1 + BETA_2, rng=rng, seed_id="ok"))
    bad = failing(synthetic_calls(70, BETA_1, rng=rng, seed_id="evil"), "b1-3", end_reason)
    return send(client, tokens, bad)


@pytest.mark.parametrize(
    "end_reason",
    [
        "xai_key_refused",  # a bogus key of its own: the workspace's fault
        "xai_error",  # a failure that looks like the provider's (its own instructions, say)
    ],
)
def test_one_workspace_failing_its_own_calls_does_not_pause_the_rollout(
    client: TestClient, tokens: Tokens, beta: None, end_reason: str
) -> None:
    result = attack_the_guard(client, tokens, end_reason)
    assert result["paused"] == []
    assert stage(client, tokens) == "beta"
    health = client.get(f"/api/v1/rollouts/{FLAG}/health", headers=auth(tokens.admin)).json()
    cohort = health["cohorts"]["beta-1"]
    if end_reason == "xai_key_refused":  # not the tier's: left out, and said so
        assert cohort["not_counted"] == {"workspace": 70}
        assert cohort["call_completion"]["value"] == 1.0
        assert health["held_back"] == []
    else:  # the tier's figure misses, but not without b1-3: shown, not acted on
        assert cohort["call_completion"]["ok"] is False
        assert any(
            "cohort beta-1: call_completion" in line and "not without workspace b1-3" in line
            for line in health["held_back"]
        )
        assert cohort["evidence"]["largest"][0]["workspace_id"] == "b1-3"


@pytest.mark.parametrize(
    ("end_reason", "switched_off"),
    [
        ("xai_error", "the per-workspace rule"),
        ("xai_key_refused", "the per-workspace rule and fault attribution"),
    ],
)
def test_with_the_rule_off_one_workspace_switches_the_tier_off_for_everyone(
    client: TestClient,
    tokens: Tokens,
    beta: None,
    monkeypatch: pytest.MonkeyPatch,
    end_reason: str,
    switched_off: str,
) -> None:
    if "fault attribution" in switched_off:
        monkeypatch.setattr(faults, "WORKSPACE_ENDINGS", frozenset())
    result = attack_the_guard(client, tokens, end_reason, min_workspaces=1)
    assert result["paused"] == [FLAG]
    assert stage(client, tokens) == "internal"


def test_fault_attribution_alone_keeps_a_refused_key_out_of_the_guard(
    client: TestClient, tokens: Tokens, beta: None
) -> None:
    """Even pooled (min_workspaces 1), calls that failed on the workspace's own key do not
    count against the tier."""
    assert attack_the_guard(client, tokens, "xai_key_refused", min_workspaces=1)["paused"] == []
    assert stage(client, tokens) == "beta"


def spread_regression(client: TestClient, tokens: Tokens) -> dict[str, Any]:
    rng = random.Random(34)
    send(client, tokens, synthetic_calls(200, INTERNAL + BETA_2, rng=rng, seed_id="ok"))
    regressed = synthetic_calls(300, BETA_1, rng=rng, seed_id="xai-down", bad=None)
    return send(client, tokens, failing_each_third(regressed))


def failing_each_third(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**call, "completed": False, "end_reason": "xai_unavailable"} if i % 3 == 0 else call
        for i, call in enumerate(calls)
    ]


def test_a_provider_regression_spread_over_many_workspaces_still_pauses(
    client: TestClient, tokens: Tokens, beta: None
) -> None:
    result = spread_regression(client, tokens)
    assert result["paused"] == [FLAG]
    assert stage(client, tokens) == "internal"
    entry = client.get(
        "/api/v1/audit", params={"action": "flag.guard_pause"}, headers=auth(tokens.admin)
    ).json()["entries"][0]
    evidence = entry["details"]["evidence"]["cohort beta-1"]
    assert evidence["workspaces"] == 10 and evidence["largest_share"] < 0.2
    assert entry["details"]["min_workspaces"] == 2


def summary_of(health: dict[str, Any]) -> Callable[[str], str]:
    def line(scope: str) -> str:
        figures = health["overall"] if scope == "overall" else health["cohorts"][scope]
        evidence = figures["evidence"]
        return f"{evidence['count']} calls from {evidence['workspaces']} workspaces"

    return line


def test_health_says_who_the_calls_came_from(
    client: TestClient, tokens: Tokens, beta: None
) -> None:
    rng = random.Random(35)
    send(client, tokens, synthetic_calls(300, BETA_1 + BETA_2, rng=rng, seed_id="ok"))
    health = client.get(f"/api/v1/rollouts/{FLAG}/health", headers=auth(tokens.admin)).json()
    line = summary_of(health)
    assert line("overall") == "300 calls from 20 workspaces"
    assert line("beta-1") == f"{health['cohorts']['beta-1']['calls']} calls from 10 workspaces"
    largest = health["overall"]["evidence"]["largest"]
    assert len(largest) == 10 and largest[0]["count"] >= largest[-1]["count"]
    assert health["overall"]["evidence"]["largest_share"] == round(largest[0]["count"] / 300, 4)


def test_a_workspace_sees_the_failures_that_are_its_own(client: TestClient, tokens: Tokens) -> None:
    rng = random.Random(36)
    ran, refused, tools = synthetic_calls(3, ["acme"], rng=rng, seed_id="own")
    refused |= {"completed": False, "end_reason": "xai_key_refused"}
    tools |= {"tool_calls_ok": 1, "tool_calls_failed": 3, "tool_calls_failed_in_tool": 2}
    send(client, tokens, [ran, refused, tools])
    path = "/api/v1/workspaces/acme/call-health"
    own = client.get(path, headers=auth(tokens.acme))
    assert own.status_code == 200, own.text
    body = own.json()
    assert (body["calls"], body["by_fault"], body["end_reasons"]) == (
        3,
        {"": 2, "workspace": 1},
        {"xai_key_refused": 1},
    )
    assert (body["tool_calls_failed"], body["tool_calls_failed_in_tool"]) == (3, 2)
    other = client.get(path, headers=auth(tokens.globex))
    assert (other.status_code, other.json()["code"]) == (404, "workspace_not_found")
