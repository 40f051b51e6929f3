"""Walk a flag along its release plan: when the current milestone has dwelt long enough, with
enough calls and every gate green, the flag moves to the next milestone by itself, audited with
the numbers that let it. A breach still pauses the rollout (the guard, in telemetry); the plan
then holds until a person resumes it. `now` is a parameter so a simulated month can be replayed.
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from control_plane.audit import service as audit
from control_plane.catalogue.models import Tier
from control_plane.core import utcnow
from control_plane.errors import ConflictError, NotFoundError
from control_plane.insights import service as insights
from control_plane.insights.service import RatingCounts, ReviewCounts
from control_plane.outbound import OutboundPolicy, post_after_commit
from control_plane.releases.models import (
    Milestone,
    MilestoneState,
    PlanCheck,
    PlanRead,
    PlanWrite,
    ReleasePlan,
)
from control_plane.rollout import service as rollout
from control_plane.rollout.gate import FlagGate
from control_plane.rollout.models import Flag, RolloutChange
from control_plane.telemetry import service as telemetry
from control_plane.telemetry.evidence import (
    C,
    EvidenceSummary,
    holds_without_any_one,
    summarize,
    total,
)
from control_plane.telemetry.models import FlagGuard

logger = logging.getLogger(__name__)

PLAN_ACTOR = "release-plan"


def get_plan(session: Session, flag_name: str) -> ReleasePlan:
    rollout.get_flag(session, flag_name)
    plan = session.get(ReleasePlan, flag_name)
    if plan is None:
        raise NotFoundError(f"Flag '{flag_name}' has no release plan.", code="plan_not_found")
    return plan


def milestones_of(plan: ReleasePlan) -> list[Milestone]:
    return [Milestone.model_validate(m) for m in plan.milestones]


def matches(flag: Flag, milestone: Milestone) -> bool:
    """The flag stands where the milestone puts it."""
    if flag.stage != milestone.stage:
        return False
    return milestone.stage != "beta" or flag.beta_percentage == milestone.beta_percentage


def _apply(
    session: Session, gate: FlagGate | None, flag: Flag, milestone: Milestone, actor: str
) -> None:
    if milestone.stage == "beta" and flag.beta_percentage != milestone.beta_percentage:
        change = RolloutChange(percentage=milestone.beta_percentage)
        rollout.set_rollout(session, gate, flag.name, change, actor=actor)
    if flag.stage != milestone.stage:
        rollout.set_stage(session, gate, flag.name, milestone.stage, actor=actor)


def read(plan: ReleasePlan) -> PlanRead:
    reached = {entry["index"]: entry["at"] for entry in plan.history}
    milestones = milestones_of(plan)
    return PlanRead(
        flag=plan.flag,
        enabled=plan.enabled,
        milestones=milestones,
        current=plan.current,
        entered_at=plan.entered_at,
        status=plan.status,
        reason=plan.reason,
        checked_at=plan.checked_at,
        version=plan.version,
        timeline=[
            MilestoneState(
                index=index,
                name=m.name,
                stage=m.stage,
                beta_percentage=m.beta_percentage,
                state="done"
                if index < plan.current
                else "current"
                if index == plan.current
                else "next",
                reached_at=datetime.fromisoformat(reached[index])
                if index in reached and index <= plan.current
                else None,
            )
            for index, m in enumerate(milestones)
        ],
    )


def _snapshot(plan: ReleasePlan) -> dict[str, Any]:
    return {"enabled": plan.enabled, "milestones": plan.milestones, "current": plan.current}


def _wait_at(session: Session, plan: ReleasePlan, index: int, now: datetime, actor: str) -> None:
    """The plan stands at milestone `index` from `now` and its dwell starts (set or resumed
    by a person; `check`'s automatic steps take a conditional version update instead)."""
    plan.current, plan.entered_at, plan.status, plan.reason = index, now, "waiting", ""
    plan.history = [*plan.history, {"index": index, "at": now.isoformat()}]
    plan.version += 1
    plan.updated_at, plan.updated_by = now, actor
    session.add(plan)
    session.flush()


def put_plan(
    session: Session,
    gate: FlagGate | None,
    flag_name: str,
    body: PlanWrite,
    *,
    actor: str,
    now: datetime | None = None,
) -> ReleasePlan:
    """Set the plan. A flag already at one of its milestones goes on from there; otherwise it
    moves to the first milestone now."""
    now = now or utcnow()
    flag = rollout.get_flag(session, flag_name)
    if flag.killed:
        raise ConflictError(
            f"Flag '{flag_name}' is killed; resume it before planning its release.",
            code="flag_killed",
        )
    plan = session.get(ReleasePlan, flag_name)
    before = _snapshot(plan) if plan else None
    plan = plan or ReleasePlan(flag=flag_name)
    current = next((i for i, m in enumerate(body.milestones) if matches(flag, m)), None)
    if current is None:
        current = 0
        _apply(session, gate, flag, body.milestones[0], actor)
    plan.milestones = [m.model_dump() for m in body.milestones]
    plan.enabled = body.enabled
    plan.history = []
    _wait_at(session, plan, current, now, actor)
    audit.record(
        session,
        actor=actor,
        action="flag.plan_set",
        target=flag_name,
        before=before,
        after=_snapshot(plan),
    )
    return plan


def resume(
    session: Session,
    gate: FlagGate | None,
    flag_name: str,
    *,
    actor: str,
    now: datetime | None = None,
) -> ReleasePlan:
    """Go on after a hold, from the milestone the flag stands at now (the guard may have
    paused it back): its dwell starts again."""
    now = now or utcnow()
    plan = get_plan(session, flag_name)
    if plan.status != "held":
        raise ConflictError(f"The release plan of '{flag_name}' is not held.", code="plan_not_held")
    flag = rollout.get_flag(session, flag_name)
    if flag.killed:
        raise ConflictError(f"Flag '{flag_name}' is killed; resume it first.", code="flag_killed")
    milestones = milestones_of(plan)
    standing = [i for i, m in enumerate(milestones) if matches(flag, m)]
    current = standing[-1] if standing else 0
    if not standing:
        _apply(session, gate, flag, milestones[0], actor)
    _wait_at(session, plan, current, now, actor)
    audit.record(
        session,
        actor=actor,
        action="flag.plan_resume",
        target=flag_name,
        details={"milestone": milestones[current].name},
    )
    return plan


def flag_tiers(session: Session, flag_name: str) -> list[str]:
    return list(session.exec(select(Tier.id).where(Tier.flag_name == flag_name)).all())


def _hold(
    session: Session, plan: ReleasePlan, reason: str, now: datetime, milestone: str
) -> PlanCheck:
    if plan.status != "held":
        audit.record(
            session,
            actor=PLAN_ACTOR,
            action="flag.plan_held",
            target=plan.flag,
            details={"milestone": milestone, "reason": reason},
        )
    plan.status, plan.reason, plan.checked_at = "held", reason, now
    session.add(plan)
    return PlanCheck(flag=plan.flag, outcome="held", reason=reason, milestone=milestone)


def check(
    session: Session,
    gate: FlagGate | None,
    flag_name: str,
    *,
    now: datetime | None = None,
    outbound: OutboundPolicy | None = None,
) -> PlanCheck:
    """Look at the plan once: advance, or say why it waits (or holds)."""
    now = now or utcnow()
    plan = session.get(ReleasePlan, flag_name)
    if plan is None or not plan.enabled:
        return PlanCheck(
            flag=flag_name, outcome="off", reason="no enabled release plan", milestone=""
        )
    milestones = milestones_of(plan)
    current = milestones[plan.current]
    if plan.status == "held":
        return PlanCheck(flag=flag_name, outcome="held", reason=plan.reason, milestone=current.name)
    flag = rollout.get_flag(session, flag_name)
    guard = telemetry.get_guard(session, flag_name)
    if flag.killed:
        return _hold(session, plan, "the kill switch is on", now, current.name)
    if guard.last_paused_at is not None and guard.last_paused_at >= plan.entered_at:
        reason = (
            f"the guard paused the rollout to {flag.stage} at {guard.last_paused_at.isoformat()}; "
            "resume the plan once the cause is fixed"
        )
        return _hold(session, plan, reason, now, current.name)
    if not matches(flag, current):
        reason = (
            f"the flag was moved away from {current.name} (now {flag.stage}, beta "
            f"{flag.beta_percentage} %); resume the plan to go on from where it stands"
        )
        return _hold(session, plan, reason, now, current.name)
    if plan.current == len(milestones) - 1:
        plan.status, plan.reason, plan.checked_at = "done", f"reached {current.name}", now
        session.add(plan)
        return PlanCheck(flag=flag_name, outcome="done", reason=plan.reason, milestone=current.name)

    following = milestones[plan.current + 1]
    dwelt = now - plan.entered_at
    waits, figures = _gates(session, flag_name, current, guard, plan.entered_at, now)
    needed = timedelta(hours=current.min_dwell_hours)
    if dwelt < needed:
        waits.insert(
            0, f"dwell: {(needed - dwelt).total_seconds() / 3600:.1f} h more at {current.name}"
        )
    figures = {"dwell_hours": round(dwelt.total_seconds() / 3600, 2), **figures}
    if waits:
        plan.status, plan.reason, plan.checked_at = "waiting", "; ".join(waits), now
        session.add(plan)
        return PlanCheck(
            flag=flag_name,
            outcome="waiting",
            reason=plan.reason,
            milestone=current.name,
            figures=figures,
        )

    # Claim the step: another replica checking the same plan at the same time moves nothing.
    claimed = session.execute(
        update(ReleasePlan)
        .where(col(ReleasePlan.flag) == flag_name, col(ReleasePlan.version) == plan.version)
        .values(version=plan.version + 1)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(plan)
        return PlanCheck(
            flag=flag_name,
            outcome="waiting",
            reason="another check moved it",
            milestone=current.name,
        )
    session.refresh(plan)
    _apply(session, gate, flag, following, PLAN_ACTOR)
    plan.current += 1
    plan.entered_at, plan.status, plan.reason, plan.checked_at = now, "waiting", "", now
    plan.history = [*plan.history, {"index": plan.current, "at": now.isoformat()}]
    session.add(plan)
    details = {"from": current.name, "to": following.name, **figures}
    audit.record(
        session, actor=PLAN_ACTOR, action="flag.auto_advance", target=flag_name, details=details
    )
    logger.info("release plan of %s advanced %s → %s", flag_name, current.name, following.name)
    if guard.webhook_url and outbound is not None:
        post_after_commit(
            session,
            outbound,
            guard.webhook_url,
            {"flag": flag_name, "event": "advance", **details, "at": now.isoformat()},
        )
    return PlanCheck(
        flag=flag_name,
        outcome="advanced",
        reason=f"{current.name} → {following.name}",
        milestone=following.name,
        figures=figures,
    )


def _gates(
    session: Session,
    flag_name: str,
    milestone: Milestone,
    guard: FlagGuard,
    since: datetime,
    now: datetime,
) -> tuple[list[str], dict[str, Any]]:
    """Why the milestone cannot be left yet (empty: it can), and the figures it was judged on.

    Every gate follows `evidence.holds_without_any_one`: it must pass on the pooled evidence
    and without each workspace's in turn, from at least `min_workspaces` workspaces, so no one
    workspace's calls, ratings or references can advance the plan by themselves."""
    min_workspaces = milestone.min_workspaces
    waits: list[str] = []
    reports = telemetry.window_reports(session, flag_name, guard, since, now)
    calls = telemetry.judge(
        "overall", reports, guard, min_calls=milestone.min_calls, min_workspaces=min_workspaces
    )
    health = calls.figures
    figures: dict[str, Any] = {
        "calls": health.calls,
        "first_audio_p95_ms": health.first_audio_p95.value,
        "tool_call_success": health.tool_call_success.value,
        "call_completion": health.call_completion.value,
        "websocket_stability": health.websocket_stability.value,
        "evidence": {"calls": _evidence(health.evidence)},
    }
    if milestone.min_calls and not health.enough_calls:
        waits.append(f"calls: {health.evidence}; {_needed(milestone.min_calls, min_workspaces)}")
    misses = [
        f"{name} {metric.value} (target {metric.target})"
        for name, metric in health.missed_targets()
    ]
    if misses:
        waits.append("health: " + "; ".join(misses))
    elif min_workspaces > 1:
        pooled = total(calls.by_workspace.values(), telemetry.NO_CALLS)
        deciders = sorted(
            workspace
            for workspace, counts in calls.by_workspace.items()
            if telemetry.misses(pooled - counts, guard)
        )
        if deciders:
            waits.append(f"health: targets missed without workspace {', '.join(deciders[:5])}")
    tiers = flag_tiers(session, flag_name)
    gates = milestone.gates
    if gates.nps_min is not None:
        ratings = insights.ratings_by_workspace(session, tiers, since, now)
        pooled_ratings = total(ratings.values(), RatingCounts())
        figures["nps"], figures["nps_responses"] = pooled_ratings.nps, pooled_ratings.responses
        summary = summarize({w: r.responses for w, r in ratings.items()}, "ratings")
        figures["evidence"]["ratings"] = _evidence(summary)
        wait = _sample_gate(
            "NPS",
            ratings,
            RatingCounts(),
            lambda r: r.nps,
            gates.nps_min,
            gates.nps_min_responses,
            min_workspaces,
            summary,
        )
        if wait:
            waits.append(wait)
    if gates.accuracy_min is not None:
        reviews = insights.reviews_by_workspace(session, tiers, since, now)
        pooled_reviews = total(reviews.values(), ReviewCounts())
        figures["accuracy"] = pooled_reviews.accuracy
        figures["accuracy_reviews"] = pooled_reviews.reviewed_calls
        summary = summarize({w: r.reviewed_calls for w, r in reviews.items()}, "reviewed calls")
        figures["evidence"]["reviews"] = _evidence(summary)
        wait = _sample_gate(
            "accuracy",
            reviews,
            ReviewCounts(),
            lambda r: r.accuracy,
            gates.accuracy_min,
            gates.accuracy_min_reviews,
            min_workspaces,
            summary,
            " (product-team reviews)",
        )
        if wait:
            waits.append(wait)
    return waits, figures


def _sample_gate(
    label: str,
    by_workspace: Mapping[str, C],
    zero: C,
    value: Callable[[C], float | None],
    minimum: float,
    min_samples: int,
    min_workspaces: int,
    summary: EvidenceSummary,
    note: str = "",
) -> str | None:
    """Why a gate over samples (ratings, reviewed calls) waits, or None when it passes: enough
    samples and the value at its minimum, each without any one workspace."""

    def enough(counts: C) -> bool:
        return counts.size >= min_samples

    def high_enough(counts: C) -> bool:
        return (value(counts) or 0) >= minimum

    if not holds_without_any_one(by_workspace, zero, enough, min_workspaces):
        return f"{label}: {summary}{note}; {_needed(min_samples, min_workspaces)}"
    if holds_without_any_one(by_workspace, zero, high_enough, min_workspaces):
        return None
    pooled = value(total(by_workspace.values(), zero))
    if (pooled or 0) >= minimum:
        return f"{label}: {pooled} with every workspace, below {minimum} without one"
    return f"{label}: {pooled} below {minimum}"


def _needed(count: int, min_workspaces: int) -> str:
    if min_workspaces <= 1:
        return f"{count} needed"
    return (
        f"{count} needed without the largest workspace, from at least {min_workspaces} workspaces"
    )


def _evidence(summary: EvidenceSummary | None) -> dict[str, Any] | None:
    """What an audit entry keeps of who the evidence came from."""
    return None if summary is None else summary.model_dump()


def check_all(
    session: Session,
    gate: FlagGate | None,
    *,
    now: datetime | None = None,
    outbound: OutboundPolicy | None = None,
) -> Sequence[PlanCheck]:
    plans = session.exec(select(ReleasePlan.flag).where(col(ReleasePlan.enabled).is_(True))).all()
    return [check(session, gate, name, now=now, outbound=outbound) for name in plans]
