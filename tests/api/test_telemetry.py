"""Call telemetry, rollout health, the self-pausing guard and /metrics."""

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event
from sqlmodel import Session, select

from control_plane import outbound as outbound_module
from control_plane.calls.models import Call
from control_plane.outbound import OutboundPolicy
from control_plane.telemetry import faults
from control_plane.telemetry import service as telemetry_service
from control_plane.telemetry.looks import GuardLooks
from control_plane.telemetry.models import CallReport
from control_plane.telemetry.service import WindowCall
from tests.conftest import Tokens, auth

FLAG = "grok-realtime-tier"
BETA_1 = [f"b1-{i}" for i in range(10)]
BETA_2 = [f"b2-{i}" for i in range(10)]
INTERNAL = ["acme"]


@pytest.fixture
def beta(client: TestClient, tokens: Tokens) -> None:
    """The flag in beta: acme internal, two beta cohorts of ten workspaces each."""
    for workspace in BETA_1 + BETA_2:
        client.post(
            "/api/v1/workspaces",
            json={"id": workspace, "name": workspace},
            headers=auth(tokens.admin),
        ).raise_for_status()
    for cohort, members in (("internal", INTERNAL), ("beta-1", BETA_1), ("beta-2", BETA_2)):
        client.put(
            f"/api/v1/cohorts/{cohort}", json={"members": members}, headers=auth(tokens.admin)
        ).raise_for_status()
    client.put(
        f"/api/v1/flags/{FLAG}/rollout",
        json={"beta_cohorts": ["beta-1", "beta-2"]},
        headers=auth(tokens.admin),
    ).raise_for_status()
    client.put(
        f"/api/v1/flags/{FLAG}/stage", json={"stage": "beta"}, headers=auth(tokens.admin)
    ).raise_for_status()
    client.patch(
        f"/api/v1/rollouts/{FLAG}/guard",
        json={"min_calls": 100, "window_seconds": 900},
        headers=auth(tokens.admin),
    ).raise_for_status()


def synthetic_calls(
    count: int, workspaces: list[str], *, rng: random.Random, seed_id: str, bad: str | None = None
) -> list[dict[str, Any]]:
    """Healthy calls (first audio ~600-900 ms, all tools ok, completed), or with one regression."""
    now = datetime.now(UTC)
    calls = []
    for i in range(count):
        call = {
            "call_id": f"{seed_id}-{i}",
            "workspace_id": rng.choice(workspaces),
            "agent_id": "agt_sim",
            "tier": "grok-realtime",
            "engine": "grok-realtime",
            "started_at": (now - timedelta(seconds=rng.uniform(0, 600))).isoformat(),
            "time_to_first_audio_ms": rng.uniform(600, 900),
            "tool_calls_ok": rng.randint(0, 2),
            "tool_calls_failed": 0,
            "transcript_events": rng.randint(2, 20),
            "end_reason": "caller_hangup",
            "completed": True,
            "websocket_disconnects": 0,
            "duration_ms": rng.uniform(30_000, 300_000),
        }
        if bad == "first_audio":
            call["time_to_first_audio_ms"] = rng.uniform(1200, 2500)
        elif bad == "tool_call_success" and i % 5 == 0:
            call["tool_calls_failed"] = 2
        elif bad == "websocket_stability" and i % 20 == 0:
            call["websocket_disconnects"] = 1
            call["completed"] = False
            call["end_reason"] = "xai_disconnected"
        calls.append(call)
    return calls


def record_as_issued(client: TestClient, calls: list[dict[str, Any]]) -> None:
    """Write the synthetic calls into the calls table, as if the control plane had issued them
    (issuing through the API is tested in tests/integration/test_call_entry.py)."""
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        known = set(session.exec(select(Call.id)).all())
        for call in calls:
            if call["call_id"] in known:
                continue
            known.add(call["call_id"])
            session.add(
                Call(
                    id=call["call_id"],
                    workspace_id=call["workspace_id"],
                    agent_id=call["agent_id"],
                    tier=call["tier"],
                    engine=call["engine"],
                    provider="xai",
                    channel="api",
                    state="active",
                    started_at=datetime.fromisoformat(call["started_at"]),
                    lease_expires_at=datetime.now(UTC) + timedelta(minutes=5),
                )
            )
        session.commit()


def send(client: TestClient, tokens: Tokens, calls: list[dict[str, Any]]) -> dict[str, Any]:
    record_as_issued(client, calls)
    result: dict[str, Any] = {"accepted": 0, "duplicates": 0, "paused": []}
    for start in range(0, len(calls), 500):
        response = client.post(
            "/api/v1/telemetry/calls",
            json={"calls": calls[start : start + 500]},
            headers=auth(tokens.service),
        )
        assert response.status_code == 200, response.text
        body = response.json()
        result["accepted"] += body["accepted"]
        result["duplicates"] += body["duplicates"]
        result["paused"] += body["paused"]
    return result


def stage(client: TestClient, tokens: Tokens) -> str:
    return str(client.get(f"/api/v1/flags/{FLAG}", headers=auth(tokens.admin)).json()["stage"])


def test_healthy_traffic_never_pauses(client: TestClient, tokens: Tokens, beta: None) -> None:
    rng = random.Random(1)
    result = send(
        client, tokens, synthetic_calls(3000, INTERNAL + BETA_1 + BETA_2, rng=rng, seed_id="ok")
    )
    assert (result["accepted"], result["paused"]) == (3000, [])
    assert stage(client, tokens) == "beta"
    health = client.get(f"/api/v1/rollouts/{FLAG}/health", headers=auth(tokens.admin)).json()
    assert health["overall"]["calls"] == 3000
    assert health["breaches"] == []
    assert set(health["cohorts"]) == {"internal", "beta-1", "beta-2"}
    assert 800 < health["overall"]["first_audio_p95"]["value"] <= 900
    assert health["overall"]["call_completion"]["value"] == 1.0


@pytest.mark.parametrize("metric", ["first_audio", "tool_call_success", "websocket_stability"])
def test_a_regression_in_one_beta_cohort_pauses_within_the_window(
    client: TestClient, tokens: Tokens, beta: None, metric: str
) -> None:
    rng = random.Random(2)
    send(client, tokens, synthetic_calls(2000, INTERNAL + BETA_2, rng=rng, seed_id="healthy"))
    assert stage(client, tokens) == "beta"
    result = send(
        client, tokens, synthetic_calls(400, BETA_1, rng=rng, seed_id="regressed", bad=metric)
    )
    assert result["paused"] == [FLAG]
    assert stage(client, tokens) == "internal"
    entry = client.get(
        "/api/v1/audit", params={"action": "flag.guard_pause"}, headers=auth(tokens.admin)
    ).json()["entries"][0]
    assert entry["actor"] == "guard:telemetry"
    assert entry["details"]["from"] == "beta" and entry["details"]["to"] == "internal"
    breach = " ".join(entry["details"]["breaches"])
    assert "cohort beta-1" in breach
    assert {
        "first_audio": "first_audio_p95",
        "tool_call_success": "tool_call_success",
        "websocket_stability": "websocket_stability",
    }[metric] in breach
    assert "cohort beta-2" not in breach
    # One regression pauses once: more reports of the same calls count once...
    again = send(
        client, tokens, synthetic_calls(400, BETA_1, rng=rng, seed_id="regressed", bad=metric)
    )
    assert again["duplicates"] == 400 and again["paused"] == []
    # ...and new reports of calls that started before the pause do not pause it again.
    paused_at = datetime.fromisoformat(entry["at"])
    older = synthetic_calls(400, BETA_1, rng=rng, seed_id="late-report", bad=metric)
    for call in older:
        call["started_at"] = (paused_at - timedelta(seconds=rng.uniform(1, 300))).isoformat()
    late = send(client, tokens, older)
    assert (late["accepted"], late["paused"]) == (400, [])
    assert stage(client, tokens) == "internal"


def cut_by_a_deploy(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls a stopped worker ended (SIGTERM, its drain run out)."""
    return [{**call, "end_reason": "worker_shutdown", "completed": False} for call in calls]


def test_calls_a_deploy_cut_do_not_count_against_the_providers_completion(
    client: TestClient, tokens: Tokens, beta: None
) -> None:
    rng = random.Random(7)
    send(client, tokens, synthetic_calls(2000, INTERNAL + BETA_2, rng=rng, seed_id="healthy"))
    cut = cut_by_a_deploy(synthetic_calls(400, BETA_1, rng=rng, seed_id="deploy"))
    assert send(client, tokens, cut)["paused"] == []
    assert stage(client, tokens) == "beta"
    health = client.get(f"/api/v1/rollouts/{FLAG}/health", headers=auth(tokens.admin)).json()
    assert health["overall"]["calls"] == 2400  # they count as calls...
    assert health["overall"]["call_completion"]["value"] == 1.0  # ...not as incomplete ones
    assert health["cohorts"]["beta-1"]["call_completion"]["value"] is None


def test_counted_as_incomplete_a_deploy_would_pause_the_rollout(
    client: TestClient, tokens: Tokens, beta: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(faults, "NOBODYS_ENDINGS", frozenset())
    rng = random.Random(7)
    send(client, tokens, synthetic_calls(2000, INTERNAL + BETA_2, rng=rng, seed_id="healthy"))
    cut = cut_by_a_deploy(synthetic_calls(400, BETA_1, rng=rng, seed_id="deploy"))
    assert send(client, tokens, cut)["paused"] == [FLAG]
    assert stage(client, tokens) == "internal"


def test_the_guard_reads_its_window_as_the_reports_were_stored(
    client: TestClient, tokens: Tokens, beta: None
) -> None:
    """The guard reads its window as columns (`WindowCall`), not entities: the same calls, each
    field as the entity has it, on either database; older calls and test calls left out."""
    rng = random.Random(9)
    calls = synthetic_calls(40, BETA_1, rng=rng, seed_id="window", bad="websocket_stability")
    calls += synthetic_calls(10, BETA_2, rng=rng, seed_id="window-slow", bad="first_audio")
    calls[3] |= {"setup_wait_ms": 12.5, "first_audio_relay_ms": 0.8, "warm_start": True}
    calls[4] |= {"time_to_first_audio_ms": None, "warm_start": False, "tool_calls_failed": 3}
    calls[5] |= {"tool_calls_failed": 2, "tool_calls_failed_in_tool": 1}
    old = synthetic_calls(5, BETA_1, rng=rng, seed_id="window-old")
    for call in old:
        call["started_at"] = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    assert send(client, tokens, calls + old)["accepted"] == 55
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        test_call = session.get(CallReport, calls[6]["call_id"])
        assert test_call is not None
        test_call.test_call = True
        session.add(test_call)
        session.commit()
        guard = telemetry_service.get_guard(session, FLAG)
        since = datetime.now(UTC) - timedelta(hours=1)
        read = telemetry_service.window_reports(session, FLAG, guard, since)
        stored = session.exec(
            select(CallReport).where(CallReport.flag == FLAG, CallReport.started_at >= since)
        ).all()
        expected = Counter(WindowCall.of(report) for report in stored if not report.test_call)
    assert sum(expected.values()) == 49 and Counter(read) == expected
    assert {type(value) for call in read for value in (call.completed, call.warm_start)} <= {
        bool,
        type(None),
    }


def look_counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The flags the guard looked at (each look reads the flag's whole window), in order."""
    looked: list[str] = []
    rollout_health = telemetry_service.rollout_health

    def counted(session: Session, flag: str, **kwargs: Any) -> Any:
        looked.append(flag)
        return rollout_health(session, flag, **kwargs)

    monkeypatch.setattr(telemetry_service, "rollout_health", counted)
    return looked


def test_healthy_reports_skip_the_look_while_a_clean_one_is_recent(
    client: TestClient, tokens: Tokens, beta: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked = look_counter(monkeypatch)
    now = [1000.0]
    client.app.state.guard_looks = GuardLooks(1.0, clock=lambda: now[0])  # type: ignore[attr-defined]
    rng = random.Random(11)
    for batch in range(5):
        send(client, tokens, synthetic_calls(20, BETA_1 + BETA_2, rng=rng, seed_id=f"ok-{batch}"))
    assert looked == [FLAG]  # the first looked and found every target met
    now[0] += 1.0  # the window may have slid since: the next report looks again
    send(client, tokens, synthetic_calls(20, BETA_1 + BETA_2, rng=rng, seed_id="ok-later"))
    assert looked == [FLAG, FLAG]
    # A report with a call that misses a target looks at once, however recent the last look.
    regression = synthetic_calls(150, BETA_1, rng=rng, seed_id="slow", bad="first_audio")
    assert send(client, tokens, regression)["paused"] == [FLAG]
    assert looked == [FLAG] * 3 and stage(client, tokens) == "internal"


def test_with_every_report_looking_each_healthy_report_reads_the_window(
    client: TestClient, tokens: Tokens, beta: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test above with the skip switched off: five reports, five looks."""
    looked = look_counter(monkeypatch)
    client.app.state.guard_looks = GuardLooks(0)  # type: ignore[attr-defined]
    rng = random.Random(11)
    for batch in range(5):
        send(client, tokens, synthetic_calls(20, BETA_1 + BETA_2, rng=rng, seed_id=f"ok-{batch}"))
    assert looked == [FLAG] * 5


def held_back_then_healthy(
    client: TestClient, tokens: Tokens, looks: GuardLooks, now: list[float]
) -> list[list[str]]:
    """A regression too small to act on (99 slow calls, the guard wants 100), then five reports
    of healthy calls that bring the count up while the cohort's p95 still misses, then one more
    a second later: what each of the six reports paused."""
    client.app.state.guard_looks = looks  # type: ignore[attr-defined]
    rng = random.Random(12)
    slow = synthetic_calls(99, BETA_1, rng=rng, seed_id="slow", bad="first_audio")
    assert send(client, tokens, slow)["paused"] == []
    paused = []
    for batch in range(5):
        healthy = synthetic_calls(5, BETA_1, rng=rng, seed_id=f"ok-{batch}")
        paused.append(send(client, tokens, healthy)["paused"])
    now[0] += 1.0
    paused.append(
        send(client, tokens, synthetic_calls(5, BETA_1, rng=rng, seed_id="ok-5"))["paused"]
    )
    return paused


def test_after_a_miss_held_back_healthy_reports_look_once_an_interval(
    client: TestClient, tokens: Tokens, beta: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Healthy traffic beside an open miss costs one look per interval, not one per report; the
    pause its calls make possible waits for the first report after the interval."""
    looked = look_counter(monkeypatch)
    now = [1000.0]
    paused = held_back_then_healthy(client, tokens, GuardLooks(1.0, clock=lambda: now[0]), now)
    assert paused == [[]] * 5 + [[FLAG]]
    assert looked == [FLAG, FLAG]  # the slow calls' report, then the one after the interval
    assert stage(client, tokens) == "internal"


def test_with_every_report_looking_the_first_report_over_the_count_pauses(
    client: TestClient, tokens: Tokens, beta: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test above with the skip switched off: every report looks, and the one that brings
    the count far enough (100 calls without the largest workspace's) pauses at once."""
    looked = look_counter(monkeypatch)
    now = [1000.0]
    paused = held_back_then_healthy(client, tokens, GuardLooks(0), now)
    assert paused == [[], [], [], [FLAG], [], []]
    assert looked == [FLAG] * 7  # after the pause, in internal, the guard goes on looking


def test_too_few_calls_never_pause(client: TestClient, tokens: Tokens, beta: None) -> None:
    rng = random.Random(3)
    result = send(
        client, tokens, synthetic_calls(99, BETA_1, rng=rng, seed_id="few", bad="first_audio")
    )
    assert result["paused"] == []
    assert stage(client, tokens) == "beta"
    health = client.get(f"/api/v1/rollouts/{FLAG}/health", headers=auth(tokens.admin)).json()
    assert health["cohorts"]["beta-1"]["enough_calls"] is False
    assert health["cohorts"]["beta-1"]["first_audio_p95"]["ok"] is False  # visible, not acted on


def test_duplicates_count_once(client: TestClient, tokens: Tokens, beta: None) -> None:
    calls = synthetic_calls(50, BETA_1, rng=random.Random(4), seed_id="dup")
    assert send(client, tokens, calls)["accepted"] == 50
    repeat = send(client, tokens, calls + calls[:10])
    assert (repeat["accepted"], repeat["duplicates"]) == (0, 60)
    single = client.post(
        "/api/v1/telemetry/calls", json=calls[0], headers=auth(tokens.service)
    ).json()
    assert (single["accepted"], single["duplicates"]) == (0, 1)
    health = client.get(f"/api/v1/rollouts/{FLAG}/health", headers=auth(tokens.admin)).json()
    assert health["overall"]["calls"] == 50


def health_calls(client: TestClient, tokens: Tokens) -> int:
    health = client.get(f"/api/v1/rollouts/{FLAG}/health", headers=auth(tokens.admin)).json()
    return int(health["overall"]["calls"])


def test_reports_of_calls_never_issued_are_refused(
    client: TestClient, tokens: Tokens, beta: None
) -> None:
    issued = synthetic_calls(3, BETA_1, rng=random.Random(8), seed_id="real")
    assert send(client, tokens, issued)["accepted"] == 3
    forged = synthetic_calls(60, BETA_1, rng=random.Random(9), seed_id="forged", bad="first_audio")
    for body in (forged[0], {"calls": forged}, {"calls": [*forged, issued[0]]}):
        response = client.post("/api/v1/telemetry/calls", json=body, headers=auth(tokens.service))
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "unknown_call"
    assert health_calls(client, tokens) == 3
    assert stage(client, tokens) == "beta"


def test_without_the_issued_call_check_forged_reports_count_and_pause(
    client: TestClient, tokens: Tokens, beta: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    forged = synthetic_calls(
        150, BETA_1, rng=random.Random(10), seed_id="forged", bad="tool_call_success"
    )
    named = {call["call_id"]: call["workspace_id"] for call in forged}  # as many as it likes

    def every_id_is_issued(session: Session, call_ids: list[str]) -> dict[str, Call]:
        return {
            call_id: Call(
                id=call_id,
                workspace_id=named[call_id],
                agent_id="agt_forged",
                tier="grok-realtime",
                engine="grok-realtime",
                provider="xai",
                channel="api",
                lease_expires_at=datetime.now(UTC),
            )
            for call_id in call_ids
        }

    monkeypatch.setattr(telemetry_service, "require_issued", every_id_is_issued)
    response = client.post(
        "/api/v1/telemetry/calls", json={"calls": forged}, headers=auth(tokens.service)
    )
    assert response.json()["accepted"] == 150
    assert response.json()["paused"] == [FLAG]
    assert stage(client, tokens) == "internal"


def test_a_report_ends_its_call_and_frees_its_slot(client: TestClient, tokens: Tokens) -> None:
    (call,) = synthetic_calls(1, ["acme"], rng=random.Random(11), seed_id="slot")
    record_as_issued(client, [call])
    calls = client.get("/api/v1/workspaces/acme/calls", headers=auth(tokens.admin)).json()
    assert calls["active"] == 1
    send(client, tokens, [call])
    calls = client.get("/api/v1/workspaces/acme/calls", headers=auth(tokens.admin)).json()
    assert calls["active"] == 0
    assert calls["calls"][0]["state"] == "ended"
    assert calls["calls"][0]["end_reason"] == "caller_hangup"


def test_a_batch_ends_its_calls_in_a_statement_per_end_reason(
    client: TestClient, tokens: Tokens
) -> None:
    """A 500-report batch once ran an UPDATE per call, each checked by the session against every
    call it held: seconds per batch. Counted, not timed: statements that end calls."""
    calls = synthetic_calls(500, ["acme"], rng=random.Random(12), seed_id="batch")
    for call in calls[::2]:
        call["end_reason"] = "agent_hangup"
    record_as_issued(client, calls)
    engine = client.app.state.engine  # type: ignore[attr-defined]
    updates: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE CALLS"):
            updates.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        result = send(client, tokens, calls)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert result["accepted"] == 500
    assert len(updates) == 2, f"{len(updates)} UPDATEs of calls for two end reasons"
    listed = client.get(
        "/api/v1/workspaces/acme/calls", params={"limit": 100}, headers=auth(tokens.admin)
    ).json()
    assert listed["active"] == 0
    assert {c["end_reason"] for c in listed["calls"]} == {"caller_hangup", "agent_hangup"}


def test_telemetry_needs_a_service_token_and_valid_reports(
    client: TestClient, tokens: Tokens
) -> None:
    call = synthetic_calls(1, ["acme"], rng=random.Random(5), seed_id="x")[0]
    record_as_issued(client, [call])
    assert (
        client.post("/api/v1/telemetry/calls", json=call, headers=auth(tokens.acme)).status_code
        == 403
    )
    bad = client.post(
        "/api/v1/telemetry/calls", json={**call, "tool_calls_ok": -1}, headers=auth(tokens.service)
    )
    assert bad.status_code == 422
    assert (
        client.get(f"/api/v1/rollouts/{FLAG}/health", headers=auth(tokens.acme)).status_code == 403
    )


def test_webhook_is_called_on_pause(client: TestClient, tokens: Tokens, beta: None) -> None:
    import threading

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from tests.fakes.server import BackgroundServer

    received: list[dict[str, Any]] = []
    arrived = threading.Event()

    async def hook(request: Request) -> Response:
        received.append(await request.json())
        arrived.set()
        return Response(status_code=204)

    with BackgroundServer(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as server:
        client.patch(
            f"/api/v1/rollouts/{FLAG}/guard",
            json={"webhook_url": f"{server.base_url}/hook"},
            headers=auth(tokens.admin),
        )
        send(
            client,
            tokens,
            synthetic_calls(200, BETA_1, rng=random.Random(6), seed_id="hook", bad="first_audio"),
        )
        assert arrived.wait(5)
    assert received[0]["flag"] == FLAG and received[0]["to"] == "internal"


@dataclass(frozen=True)
class RecordingOutbound(OutboundPolicy):
    """Webhooks recorded instead of sent."""

    posted: list[dict[str, object]] = field(default_factory=list)

    def post_json(self, url: str, payload: Mapping[str, object]) -> None:
        self.posted.append(dict(payload))


def pause_in_a_transaction(
    client: TestClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch, *, commit: bool
) -> RecordingOutbound:
    """Breaching calls arrive while the guard is off; then the guard pauses the rollout in a
    transaction that commits or rolls back (a failed commit, say). Webhooks go out at once."""
    monkeypatch.setattr(
        outbound_module, "post_in_background", lambda o, url, p: o.post_json(url, p)
    )
    guard = f"/api/v1/rollouts/{FLAG}/guard"
    client.patch(guard, json={"enabled": False}, headers=auth(tokens.admin)).raise_for_status()
    calls = synthetic_calls(200, BETA_1, rng=random.Random(8), seed_id="tx", bad="first_audio")
    assert send(client, tokens, calls)["paused"] == []
    client.patch(
        guard,
        json={"enabled": True, "webhook_url": "http://hooks.example/pause"},
        headers=auth(tokens.admin),
    ).raise_for_status()
    outbound = RecordingOutbound(public_only=False, allowed_hosts=frozenset())
    state = client.app.state  # type: ignore[attr-defined]
    with Session(state.engine) as session:
        assert telemetry_service.guard_check(session, state.flag_gate, FLAG, outbound=outbound)
        if commit:
            session.commit()
        else:
            session.rollback()
    return outbound


def test_the_pause_webhook_waits_for_the_commit(
    client: TestClient, tokens: Tokens, beta: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    rolled_back = pause_in_a_transaction(client, tokens, monkeypatch, commit=False)
    assert rolled_back.posted == []
    assert stage(client, tokens) == "beta"
    committed = pause_in_a_transaction(client, tokens, monkeypatch, commit=True)
    assert [(p["from"], p["to"]) for p in committed.posted] == [("beta", "internal")]
    assert stage(client, tokens) == "internal"


def test_without_waiting_for_the_commit_a_webhook_announces_a_pause_that_never_happened(
    client: TestClient, tokens: Tokens, beta: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        telemetry_service, "post_after_commit", lambda session, o, url, p: o.post_json(url, p)
    )
    rolled_back = pause_in_a_transaction(client, tokens, monkeypatch, commit=False)
    assert [(p["from"], p["to"]) for p in rolled_back.posted] == [("beta", "internal")]
    assert stage(client, tokens) == "beta"


def test_metrics_parse_with_the_prometheus_parser(
    client: TestClient, tokens: Tokens, beta: None
) -> None:
    send(client, tokens, synthetic_calls(20, BETA_1, rng=random.Random(7), seed_id="m"))
    client.get("/api/v1/tiers")
    client.get(
        "/api/v1/tiers/grok-realtime", params={"workspace_id": "b1-1"}, headers=auth(tokens.admin)
    )
    text = client.get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert "switchboard_http_request_duration_seconds" in families
    routes = {
        s.labels.get("route") for s in families["switchboard_http_request_duration_seconds"].samples
    }
    assert "/api/v1/tiers/{tier_id}" in routes  # templates, not raw paths
    calls = {s.labels["cohort"]: s.value for s in families["switchboard_rollout_calls"].samples}
    assert calls["beta-1"] == 20
    spread = {
        s.labels["cohort"]: s.value for s in families["switchboard_rollout_workspaces"].samples
    }
    assert 1 < spread["beta-1"] <= 10
    largest = families["switchboard_rollout_largest_workspace_share"].samples
    assert all(0 < s.value <= 1 for s in largest) and largest
    assert any(
        s.labels["enabled"] == "true" for s in families["switchboard_flag_evaluations"].samples
    )
    assert "switchboard_config_cache" in families
    assert "xai-" not in text


def test_health_splits_first_audio_into_our_part_and_xais(
    client: TestClient, tokens: Tokens, beta: None
) -> None:
    rng = random.Random(7)
    reports = synthetic_calls(200, INTERNAL, rng=rng, seed_id="split")
    for index, report in enumerate(reports):
        warm = index % 4 != 0  # three calls in four attach to a warm session
        report["warm_start"] = warm
        report["setup_wait_ms"] = 0.0 if warm else 150.0 + index % 50
        report["first_audio_relay_ms"] = 0.2 + (index % 10) / 10
    send(client, tokens, reports)
    health = client.get(f"/api/v1/rollouts/{FLAG}/health", headers=auth(tokens.admin)).json()
    overall = health["overall"]
    assert overall["warm_start_share"] == 0.75
    assert overall["setup_wait_p50_ms"] == 0.0
    assert 150 <= overall["setup_wait_p95_ms"] <= 199
    assert overall["first_audio_relay_p95_ms"] == pytest.approx(1.1)
