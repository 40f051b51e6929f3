"""Call telemetry in, rollout health out, and the guard that pauses a rollout by itself.

Health is computed per flag over a time window, overall and per cohort, against the guard's
targets (the seed's: first audio ≤ 1.0 s at p95 with 0.78 s as the aim, tool-call success ≥ 95 %,
completion ≥ 98 %, WebSocket stability ≥ 99.5 %). A cohort or the whole rollout with at least
`min_calls` calls that misses a target during internal or beta pauses the rollout one stage back
(beta → internal, internal → off), audited with the numbers; a person resumes it. Calls that
started before a pause do not count again, so one regression pauses once.
"""

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from control_plane.audit import service as audit
from control_plane.calls import service as calls
from control_plane.calls.models import Call
from control_plane.catalogue.models import Tier
from control_plane.core import utcnow
from control_plane.errors import InvalidInputError
from control_plane.insights import service as insights
from control_plane.outbound import NotPublicError, OutboundPolicy, post_after_commit
from control_plane.rollout import service as rollout
from control_plane.rollout.gate import FlagGate
from control_plane.rollout.models import Flag
from control_plane.telemetry.models import (
    CallReport,
    CallReportIn,
    FlagGuard,
    GuardWrite,
    HealthFigures,
    IngestResult,
    MetricHealth,
    RolloutHealth,
)
from switchboard_runtime.contract import WORKER_SHUTDOWN

logger = logging.getLogger(__name__)

GUARD_ACTOR = "guard:telemetry"
PAUSE_TO = {"beta": "internal", "internal": "off"}


def cohort_of(flag: Flag, cohorts: dict[str, list[str]], workspace_id: str) -> str:
    for name in [*flag.internal_cohorts, *flag.beta_cohorts]:
        if workspace_id in cohorts.get(name, ()):
            return name
    return {"beta": "percentage", "ga": "ga"}.get(flag.stage, "outside")


def ingest(
    session: Session,
    gate: FlagGate | None,
    reports: Sequence[CallReportIn],
    outbound: OutboundPolicy | None = None,
    *,
    now: datetime | None = None,
) -> IngestResult:
    """Store new reports of issued calls (a call id seen before counts once), end those calls,
    then let the guards look. A report of a call the control plane never issued is refused."""
    unique = {r.call_id: r for r in reports}
    issued = require_issued(session, list(unique))
    existing = set(
        session.exec(
            select(CallReport.call_id).where(col(CallReport.call_id).in_(list(unique)))
        ).all()
    )
    flags_by_tier = {t.id: t.flag_name for t in session.exec(select(Tier))}
    flags = {f.name: f for f in rollout.list_flags(session)}
    cohorts = rollout.cohort_members(session)
    touched: set[str] = set()
    for report in unique.values():
        if report.call_id in existing:
            continue
        call = issued[report.call_id]
        flag_name = flags_by_tier.get(call.tier)
        flag = flags.get(flag_name) if flag_name else None
        if report.transcript:
            lines = [line.model_dump() for line in report.transcript]
            insights.keep_transcript(session, call, lines, now or utcnow())
        session.add(
            CallReport(
                **report.model_dump(
                    exclude={"workspace_id", "agent_id", "tier", "engine", "transcript"}
                ),
                workspace_id=call.workspace_id,
                agent_id=call.agent_id,
                tier=call.tier,
                engine=call.engine,
                flag=flag_name,
                cohort=cohort_of(flag, cohorts, call.workspace_id) if flag else "",
                test_call=call.channel == "browser",
            )
        )
        if flag_name:
            touched.add(flag_name)
    calls.mark_ended(session, {r.call_id: r.end_reason or "reported" for r in unique.values()})
    session.flush()
    paused = [
        name
        for name in sorted(touched)
        if gate is not None and guard_check(session, gate, name, now=now, outbound=outbound)
    ]
    return IngestResult(
        accepted=len(unique) - len(existing),
        duplicates=len(reports) - (len(unique) - len(existing)),
        paused=paused,
    )


def require_issued(session: Session, call_ids: list[str]) -> dict[str, Call]:
    """The issued calls behind these ids; any id the control plane never issued refuses all."""
    issued = calls.issued_calls(session, call_ids)
    unknown = [call_id for call_id in call_ids if call_id not in issued]
    if unknown:
        shown = ", ".join(call_id[:64] for call_id in unknown[:5])
        raise InvalidInputError(
            f"{len(unknown)} report(s) name calls this control plane never issued: {shown}. "
            "Nothing was stored.",
            code="unknown_call",
        )
    return issued


def get_guard(session: Session, flag_name: str) -> FlagGuard:
    rollout.get_flag(session, flag_name)
    guard = session.get(FlagGuard, flag_name)
    if guard is None:
        guard = FlagGuard(flag=flag_name)
        session.add(guard)
        session.flush()
    return guard


def update_guard(
    session: Session,
    flag_name: str,
    body: GuardWrite,
    *,
    actor: str,
    outbound: OutboundPolicy | None = None,
) -> FlagGuard:
    guard = get_guard(session, flag_name)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("webhook_url") and outbound is not None:
        try:
            outbound.check_literal(changes["webhook_url"])
        except NotPublicError as exc:
            raise InvalidInputError(
                f"webhook_url must reach a public address in production: {exc}.",
                code="webhook_not_public",
            ) from None
    before = {k: getattr(guard, k) for k in changes}
    for key, value in changes.items():
        setattr(guard, key, value)
    session.add(guard)
    session.flush()
    audit.record(
        session, actor=actor, action="guard.update", target=flag_name, before=before, after=changes
    )
    return guard


# End reasons that say nothing about the provider (see `figures`).
NOT_THE_PROVIDERS_ENDING = frozenset({WORKER_SHUTDOWN})


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def figures(reports: Sequence[CallReport], guard: FlagGuard) -> HealthFigures:
    calls = len(reports)
    first_audio = [
        r.time_to_first_audio_ms for r in reports if r.time_to_first_audio_ms is not None
    ]
    tools_ok = sum(r.tool_calls_ok for r in reports)
    tools_all = tools_ok + sum(r.tool_calls_failed for r in reports)
    p95 = _percentile(first_audio, 0.95)
    tool_success = tools_ok / tools_all if tools_all else None
    # A call its worker ended on a stop (a deploy) ran fine until then: it counts in every
    # figure but completion, which is about how the provider's calls end.
    judged = [r for r in reports if r.end_reason not in NOT_THE_PROVIDERS_ENDING]
    completion = sum(r.completed for r in judged) / len(judged) if judged else None
    stability = sum(r.websocket_disconnects == 0 for r in reports) / calls if calls else None

    def metric(value: float | None, target: float, higher_is_better: bool) -> MetricHealth:
        if value is None:
            return MetricHealth(value=None, target=target, ok=None)
        return MetricHealth(
            value=round(value, 4),
            target=target,
            ok=value >= target if higher_is_better else value <= target,
        )

    setup_wait = [r.setup_wait_ms for r in reports if r.setup_wait_ms is not None]
    relay = [r.first_audio_relay_ms for r in reports if r.first_audio_relay_ms is not None]
    started = [r.warm_start for r in reports if r.warm_start is not None]
    return HealthFigures(
        calls=calls,
        first_audio_p50_ms=_percentile(first_audio, 0.5),
        setup_wait_p50_ms=_percentile(setup_wait, 0.5),
        setup_wait_p95_ms=_percentile(setup_wait, 0.95),
        first_audio_relay_p95_ms=_percentile(relay, 0.95),
        warm_start_share=round(sum(started) / len(started), 4) if started else None,
        first_audio_p95=metric(p95, guard.first_audio_p95_max_ms, False),
        tool_call_success=metric(tool_success, guard.tool_success_min, True),
        call_completion=metric(completion, guard.completion_min, True),
        websocket_stability=metric(stability, guard.websocket_stability_min, True),
        enough_calls=calls >= guard.min_calls,
    )


def _breaches(scope: str, health: HealthFigures) -> list[str]:
    if not health.enough_calls:
        return []
    return [
        f"{scope}: {name} {metric.value} (target {metric.target}, {health.calls} calls)"
        for name, metric in health.missed_targets()
    ]


def health(
    session: Session,
    flag_name: str,
    *,
    window_seconds: int | None = None,
    now: datetime | None = None,
) -> RolloutHealth:
    flag = rollout.get_flag(session, flag_name)
    guard = get_guard(session, flag_name)
    now = now or utcnow()
    window = window_seconds or guard.window_seconds
    since = now - timedelta(seconds=window)
    if guard.last_paused_at is not None and guard.last_paused_at > since:
        since = guard.last_paused_at
    query = select(CallReport).where(
        CallReport.flag == flag_name, col(CallReport.started_at) >= since
    )
    if not guard.include_test_calls:
        query = query.where(col(CallReport.test_call).is_(False))
    reports = session.exec(query).all()
    by_cohort: dict[str, list[CallReport]] = defaultdict(list)
    for report in reports:
        by_cohort[report.cohort].append(report)
    overall = figures(reports, guard)
    cohorts = {name: figures(rows, guard) for name, rows in sorted(by_cohort.items())}
    breaches = [b for name, f in cohorts.items() for b in _breaches(f"cohort {name}", f)]
    breaches += _breaches("overall", overall)
    return RolloutHealth(
        flag=flag_name,
        stage=flag.stage,
        killed=flag.killed,
        window_seconds=window,
        since=since,
        overall=overall,
        cohorts=cohorts,
        breaches=breaches,
    )


def first_audio_p95_per_day(
    session: Session, flag_name: str, *, days: int = 14, now: datetime | None = None
) -> list[tuple[str, float | None]]:
    """The flag's first-audio p95 day by day (phone calls only): the console's health chart."""
    now = now or utcnow()
    since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = session.exec(
        select(CallReport.started_at, CallReport.time_to_first_audio_ms)
        .where(CallReport.flag == flag_name, col(CallReport.started_at) >= since)
        .where(col(CallReport.test_call).is_(False))
    ).all()
    per_day: dict[str, list[float]] = defaultdict(list)
    for started_at, first_audio in rows:
        if first_audio is not None:
            per_day[started_at.date().isoformat()].append(first_audio)
    return [
        (day, _percentile(per_day.get(day, []), 0.95))
        for day in ((since + timedelta(days=i)).date().isoformat() for i in range(days))
    ]


def guard_check(
    session: Session,
    gate: FlagGate,
    flag_name: str,
    now: datetime | None = None,
    outbound: OutboundPolicy | None = None,
) -> bool:
    """Pause the rollout if a target is breached during internal or beta. True if paused."""
    guard = get_guard(session, flag_name)
    flag = rollout.get_flag(session, flag_name)
    if not guard.enabled or flag.killed or flag.stage not in PAUSE_TO:
        return False
    now = now or utcnow()
    report = health(session, flag_name, now=now)
    if not report.breaches:
        return False
    previous, paused_to = flag.stage, PAUSE_TO[flag.stage]
    rollout.set_stage(session, gate, flag_name, paused_to, actor=GUARD_ACTOR)
    guard.last_paused_at = now
    session.add(guard)
    details = {"from": previous, "to": paused_to, "breaches": report.breaches}
    audit.record(
        session, actor=GUARD_ACTOR, action="flag.guard_pause", target=flag_name, details=details
    )
    logger.warning(
        "rollout of %s paused %s → %s: %s",
        flag_name,
        previous,
        paused_to,
        "; ".join(report.breaches),
    )
    if guard.webhook_url and outbound is not None:
        payload = {"flag": flag_name, **details, "at": now.isoformat()}
        post_after_commit(session, outbound, guard.webhook_url, payload)
    return True
