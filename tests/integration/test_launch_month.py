"""A simulated month of the Grok launch, on the real services with an injected clock: new agents
drive adoption to about 6 % against the 5 % target, ratings drive NPS, reviewers' references
drive accuracy, and a healthy release plan walks internal → beta 10 % → beta 50 % → GA by
itself, every step audited with its numbers; a regression at beta 50 % pauses it back and the
plan holds. Transcripts are kept only with the workspace's opt-in and are gone after their
retention."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from control_plane.audit.models import AuditEntry
from control_plane.auth.principal import SYSTEM
from control_plane.calls.models import Call
from control_plane.insights import service as insights
from control_plane.insights.models import CallTranscript, FeedbackWrite
from control_plane.releases import service as releases
from control_plane.releases.models import Milestone, PlanWrite
from control_plane.rollout import service as rollout
from control_plane.rollout.models import CohortWrite, RolloutChange
from control_plane.telemetry import service as telemetry
from control_plane.telemetry.models import CallReportIn, HealthFigures
from control_plane.workspaces import service as workspaces
from control_plane.workspaces.models import (
    AgentCreate,
    WorkspaceCreate,
    WorkspaceSettingsPatch,
)
from tests.conftest import issued_grok_call

FLAG = "grok-realtime-tier"
START = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
WORKSPACES = [f"w{i:02d}" for i in range(20)]
PLAN = PlanWrite(
    milestones=[
        Milestone(name="internal alpha", stage="internal", min_dwell_hours=72, min_calls=100),
        Milestone(
            name="beta 10 %", stage="beta", beta_percentage=10, min_dwell_hours=120, min_calls=100
        ),
        Milestone(
            name="beta 50 %",
            stage="beta",
            beta_percentage=50,
            min_dwell_hours=168,
            min_calls=100,
            gates={
                "nps_min": 40,
                "nps_min_responses": 20,
                "accuracy_min": 0.9,
                "accuracy_min_reviews": 5,
            },
        ),
        Milestone(name="GA", stage="ga"),
    ]
)


class Month:
    """The world the month happens in: a session, the flag gate, the clock."""

    def __init__(self, client: TestClient) -> None:
        self.app = client.app
        self.gate = self.app.state.flag_gate  # type: ignore[attr-defined]
        self.session = Session(self.app.state.engine)  # type: ignore[attr-defined]
        self.now = START
        s = self.session
        for workspace_id in WORKSPACES:
            workspaces.create_workspace(
                s, SYSTEM, WorkspaceCreate(id=workspace_id, name=workspace_id)
            )
        rollout.put_cohort(
            s, self.gate, "internal", CohortWrite(members=WORKSPACES[:2]), actor="test"
        )
        rollout.set_rollout(
            s, self.gate, FLAG, RolloutChange(internal_cohorts=["internal"]), actor="test"
        )
        workspaces.update_settings(
            s,
            SYSTEM,
            "w00",
            WorkspaceSettingsPatch(keep_transcripts=True, transcript_retention_days=7),
        )
        s.commit()

    def agents(self, count: int, grok: int) -> None:
        """New agents today: `grok` of them on grok-realtime, the rest on premium."""
        for index in range(count):
            tier = "grok-realtime" if index < grok else "premium"
            agent = workspaces.create_agent(
                self.session,
                SYSTEM,
                WORKSPACES[index % len(WORKSPACES)],
                AgentCreate(
                    name=f"a{index}",
                    pricing_tier=tier,
                    voice="Ara" if tier == "grok-realtime" else "alloy",
                ),
                gate=None,
            )
            agent.created_at = self.now - timedelta(minutes=index)
        self.session.commit()

    def calls(
        self,
        count: int,
        *,
        first_audio_ms: float = 620.0,
        rate: list[int] | None = None,
        transcript: bool = False,
    ) -> list[str]:
        """Calls on grok-realtime from the workspaces the flag is on for, just before now."""
        enabled = [w for w in WORKSPACES if self.gate.decide(FLAG, w).enabled]
        reports, ids = [], []
        for index in range(count):
            workspace_id = enabled[index % len(enabled)]
            call = issued_grok_call(workspace_id, self.now)
            self.session.add(call)
            ids.append(call.id)
            reports.append(
                CallReportIn(
                    call_id=call.id,
                    started_at=self.now - timedelta(minutes=5),
                    time_to_first_audio_ms=first_audio_ms,
                    tool_calls_ok=1,
                    end_reason="caller_hangup",
                    completed=True,
                    duration_ms=180_000,
                    transcript=[
                        {"role": "caller", "text": "where is my order number forty two please"},
                        {"role": "agent", "text": "It shipped yesterday."},
                    ]
                    if transcript
                    else None,
                )
            )
        self.session.flush()
        telemetry.ingest(self.session, self.gate, reports, now=self.now)
        for call_id, score in zip(ids, rate or [], strict=False):
            insights.record_feedback(
                self.session, SYSTEM, call_id, FeedbackWrite(score=score), now=self.now
            )
        self.session.commit()
        return ids

    def keep_transcripts(self, workspace_id: str) -> None:
        workspaces.update_settings(
            self.session, SYSTEM, workspace_id, WorkspaceSettingsPatch(keep_transcripts=True)
        )
        self.session.commit()

    def check(self) -> str:
        result = releases.check(self.session, self.gate, FLAG, now=self.now)
        self.session.commit()
        return result.outcome

    def stage(self) -> tuple[str, int]:
        flag = rollout.get_flag(self.session, FLAG)
        return flag.stage, flag.beta_percentage

    def audit(self, action: str) -> list[AuditEntry]:
        return list(
            self.session.exec(
                select(AuditEntry).where(AuditEntry.action == action).order_by(col(AuditEntry.id))
            ).all()
        )


@pytest.fixture
def month(client: TestClient) -> Any:
    world = Month(client)
    yield world
    world.session.close()


PROMOTERS_AND_A_FEW_OTHERS = [10, 9, 9, 10, 8, 9, 10, 6, 9, 10]  # 8 promoters, 1 detractor: 70


def review(month: Month, call_ids: list[str], reviewed: int) -> int:
    """The product team reviews the day's kept transcripts (up to 6); one in three the caller
    said differently from what xAI heard. Returns how many have been reviewed in all."""
    heard = "where is my order number forty two please"
    kept = [c for c in call_ids if month.session.get(CallTranscript, c) is not None][:6]
    for call_id in kept:
        said = heard if reviewed % 3 else "where is my order number forty three please"
        insights.set_reference(month.session, SYSTEM, call_id, said, now=month.now)
        reviewed += 1
    return reviewed


def test_a_healthy_month_walks_the_plan_to_ga(month: Month) -> None:
    month.keep_transcripts("w01")  # reviews from two workspaces: the gate holds without either
    releases.put_plan(month.session, month.gate, FLAG, PLAN, actor="test", now=month.now)
    month.session.commit()
    stages, reviewed = [], 0
    for day in range(30):
        month.now = START + timedelta(days=day)
        month.agents(10, grok=1 if day % 5 in (0, 2, 4) else 0)  # 18 of 300 new agents: 6 %
        ids = month.calls(60, rate=PROMOTERS_AND_A_FEW_OTHERS, transcript=True)
        reviewed = review(month, ids, reviewed)
        month.session.commit()
        month.check()
        stages.append(month.stage())
    assert stages[0] == ("internal", 0)
    assert ("beta", 10) in stages and ("beta", 50) in stages
    assert stages[-1][0] == "ga"
    steps = month.audit("flag.auto_advance")
    assert [(s.details["from"], s.details["to"]) for s in steps] == [
        ("internal alpha", "beta 10 %"),
        ("beta 10 %", "beta 50 %"),
        ("beta 50 %", "GA"),
    ]
    assert all(s.details["calls"] >= 100 and s.details["first_audio_p95_ms"] == 620 for s in steps)
    assert steps[-1].details["nps"] >= 40 and steps[-1].details["accuracy"] >= 0.9
    # Each step says who its evidence came from: never one workspace's alone.
    for step in steps:
        calls = step.details["evidence"]["calls"]
        assert calls["workspaces"] >= 2 and calls["largest_share"] <= 0.5
        assert calls["largest"][0]["count"] <= calls["count"] - 100  # 100 without the largest
    assert steps[-1].details["evidence"]["reviews"]["workspaces"] == 2
    assert steps[-1].details["evidence"]["ratings"]["workspaces"] >= 2

    adoption = insights.adoption(month.session, now=month.now)
    assert 0.05 < adoption.grok_share_of_new_agents.value < 0.07
    assert adoption.grok_share_of_new_agents.ok is True
    assert insights.nps(month.session, now=month.now).per_tier["grok-realtime"].nps.value == 70.0
    figures = insights.accuracy(month.session, now=month.now).per_tier["grok-realtime"]
    assert figures.reviewed_calls > 0 and figures.accuracy.ok is True


def test_a_regression_at_beta_50_pauses_it_back_and_the_plan_holds(month: Month) -> None:
    releases.put_plan(month.session, month.gate, FLAG, PLAN, actor="test", now=month.now)
    month.session.commit()
    stages, day = [], 0
    while month.stage() != ("beta", 50):
        month.now = START + timedelta(days=day)
        month.calls(60, rate=PROMOTERS_AND_A_FEW_OTHERS)
        month.check()
        day += 1
    for later in range(day, day + 10):  # a bad day at beta 50 %, then healthy days again
        month.now = START + timedelta(days=later)
        month.calls(60, first_audio_ms=2400.0 if later == day else 620.0)
        month.check()
        stages.append(month.stage())
    assert stages[0] == ("internal", 50)  # the guard paused beta back to internal at once
    assert set(stages) == {("internal", 50)}  # healthy again, but held: nothing advanced
    paused = month.audit("flag.guard_pause")
    assert len(paused) == 1 and paused[0].details["to"] == "internal"
    held = month.audit("flag.plan_held")
    assert len(held) == 1 and "guard paused" in held[0].details["reason"]
    plan = releases.get_plan(month.session, FLAG)
    assert plan.status == "held" and plan.current == 2
    assert [s.details["to"] for s in month.audit("flag.auto_advance")] == ["beta 10 %", "beta 50 %"]

    # A person fixes the cause and resumes: the plan goes on from where the flag stands.
    releases.resume(month.session, month.gate, FLAG, actor="test", now=month.now)
    month.session.commit()
    assert releases.get_plan(month.session, FLAG).current == 0  # internal alpha, dwell anew


def test_without_the_health_gate_or_the_guard_a_regression_walks_to_ga(
    month: Month, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The plan's health gate reads the missed targets; no metric misses any now.
    monkeypatch.setattr(HealthFigures, "missed_targets", lambda self: [])
    monkeypatch.setattr(telemetry, "misses", lambda counts, guard: set())
    monkeypatch.setattr(telemetry, "guard_check", lambda *args, **kwargs: False)
    month.keep_transcripts("w01")
    releases.put_plan(month.session, month.gate, FLAG, PLAN, actor="test", now=month.now)
    month.session.commit()
    reviewed = 0
    for day in range(20):
        month.now = START + timedelta(days=day)
        month.calls(60, first_audio_ms=2400.0, rate=PROMOTERS_AND_A_FEW_OTHERS, transcript=True)
        reviewed = review(month, month.calls(6, transcript=True), reviewed)
        month.session.commit()
        month.check()
    assert month.stage()[0] == "ga"


def test_transcripts_are_kept_only_with_the_opt_in_and_only_until_their_retention(
    month: Month,
) -> None:
    ids = month.calls(20, transcript=True)  # w00 opted in (7 days), w01 did not
    kept = {t.call_id: t for t in month.session.exec(select(CallTranscript)).all()}
    workspaces_of = {c.id: c.workspace_id for c in month.session.exec(select(Call)).all()}
    assert kept and all(workspaces_of[call_id] == "w00" for call_id in kept)
    assert {i for i in ids if workspaces_of[i] == "w01"}.isdisjoint(kept)
    assert insights.purge_transcripts(month.session, now=month.now + timedelta(days=6)) == 0
    assert insights.purge_transcripts(month.session, now=month.now + timedelta(days=7)) == len(kept)
    month.session.commit()
    assert month.session.exec(select(CallTranscript)).all() == []

    month.calls(4, transcript=True)
    assert month.session.exec(select(CallTranscript)).all()
    workspaces.update_settings(
        month.session, SYSTEM, "w00", WorkspaceSettingsPatch(keep_transcripts=False)
    )
    month.session.commit()
    assert month.session.exec(select(CallTranscript)).all() == []  # opting out forgets them
    month.calls(4, transcript=True)
    assert month.session.exec(select(CallTranscript)).all() == []
