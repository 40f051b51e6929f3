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
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlmodel import Session, col, select

from control_plane.audit import service as audit
from control_plane.auth.principal import Principal
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
from control_plane.telemetry.evidence import Counts, holds_without_any_one, summarize, total
from control_plane.telemetry.faults import AGAINST_THE_TIER, attribute
from control_plane.telemetry.looks import GuardLooks
from control_plane.telemetry.models import (
    CallReport,
    CallReportIn,
    FlagGuard,
    GuardWrite,
    HealthFigures,
    IngestResult,
    MetricHealth,
    RolloutHealth,
    WorkspaceCallHealth,
)
from control_plane.workspaces import service as workspaces

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
    looks: GuardLooks | None = None,
) -> IngestResult:
    """Store new reports of issued calls (a call id seen before counts once), end those calls,
    then let the guards look (see `GuardLooks` for when a look is skipped). A report of a call
    the control plane never issued is refused."""
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
    touched: dict[str, list[CallReport]] = defaultdict(list)
    for report in unique.values():
        if report.call_id in existing:
            continue
        call = issued[report.call_id]
        flag_name = flags_by_tier.get(call.tier)
        flag = flags.get(flag_name) if flag_name else None
        if report.transcript:
            lines = [line.model_dump() for line in report.transcript]
            insights.keep_transcript(session, call, lines, now or utcnow())
        stored = CallReport(
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
            fault=attribute(report),
        )
        session.add(stored)
        if flag_name:
            touched[flag_name].append(stored)
    calls.mark_ended(session, {r.call_id: r.end_reason or "reported" for r in unique.values()})
    session.flush()
    paused = [
        name
        for name, new in sorted(touched.items())
        if gate is not None
        and guard_check(session, gate, name, now=now, outbound=outbound, looks=looks, new=new)
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


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _rounded(value: float) -> float:
    return round(value, 4)


def _meets(value: float, target: float, higher_is_better: bool) -> bool:
    value = _rounded(value)
    return value >= target if higher_is_better else value <= target


class WindowCall(NamedTuple):
    """What the guard and the release gates read of one call report. A guard look reads every
    call in its window after every report (or batch), so these are loaded as columns: ORM
    entities take 3-4x as long to load (`make bench-guard-look`)."""

    workspace_id: str
    cohort: str
    fault: str
    time_to_first_audio_ms: float | None
    setup_wait_ms: float | None
    first_audio_relay_ms: float | None
    warm_start: bool | None
    completed: bool
    websocket_disconnects: int
    tool_calls_ok: int
    tool_calls_failed: int
    tool_calls_failed_in_tool: int

    @classmethod
    def of(cls, report: CallReport) -> "WindowCall":
        return cls(*(getattr(report, name) for name in cls._fields))


def _judged_for_completion(report: WindowCall) -> bool:
    """Completion is about how the provider's and our calls end: a call that ended with
    nobody's fault without completing (a deploy stopped its worker) is not judged."""
    return report.completed or report.fault in ("provider", "runtime")


def _tools_the_tier_answers_for(report: WindowCall) -> int:
    return report.tool_calls_ok + report.tool_calls_failed - report.tool_calls_failed_in_tool


def figures(reports: Sequence[WindowCall], guard: FlagGuard) -> HealthFigures:
    """The guard's figures over calls that count against the tier (see `counted`)."""
    calls = len(reports)
    first_audio = [
        r.time_to_first_audio_ms for r in reports if r.time_to_first_audio_ms is not None
    ]
    tools_ok = sum(r.tool_calls_ok for r in reports)
    tools_all = sum(_tools_the_tier_answers_for(r) for r in reports)
    p95 = _percentile(first_audio, 0.95)
    tool_success = tools_ok / tools_all if tools_all else None
    judged = [r for r in reports if _judged_for_completion(r)]
    completion = sum(r.completed for r in judged) / len(judged) if judged else None
    stability = sum(r.websocket_disconnects == 0 for r in reports) / calls if calls else None

    def metric(value: float | None, target: float, higher_is_better: bool) -> MetricHealth:
        if value is None:
            return MetricHealth(value=None, target=target, ok=None)
        return MetricHealth(
            value=_rounded(value), target=target, ok=_meets(value, target, higher_is_better)
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


@dataclass(frozen=True)
class CallCounts(Counts):
    """One workspace's calls, as sums: enough to tell whether each guarded figure meets its
    target on any pool of workspaces (a pool without one is a subtraction)."""

    calls: int = 0
    first_audio: int = 0
    first_audio_within: int = 0  # at or under the guard's p95 limit
    judged: int = 0  # for completion
    completed: int = 0
    stable: int = 0
    tools: int = 0
    tools_ok: int = 0

    @property
    def size(self) -> int:
        return self.calls


NO_CALLS = CallCounts()


def call_counts(reports: Iterable[WindowCall], guard: FlagGuard) -> CallCounts:
    reports = list(reports)
    limit = guard.first_audio_p95_max_ms
    first_audio = [
        r.time_to_first_audio_ms for r in reports if r.time_to_first_audio_ms is not None
    ]
    judged = [r for r in reports if _judged_for_completion(r)]
    return CallCounts(
        calls=len(reports),
        first_audio=len(first_audio),
        first_audio_within=sum(_meets(ms, limit, False) for ms in first_audio),
        judged=len(judged),
        completed=sum(r.completed for r in judged),
        stable=sum(r.websocket_disconnects == 0 for r in reports),
        tools=sum(_tools_the_tier_answers_for(r) for r in reports),
        tools_ok=sum(r.tool_calls_ok for r in reports),
    )


def meets_every_target(report: WindowCall, guard: FlagGuard) -> bool:
    """Whether this call, added to any pool of calls whose figures all meet their targets,
    leaves them all met: it does not count against the tier, or on its own it misses no guarded
    figure (a pooled ratio lies between the pool's and the call's; a p95 within its limit stays
    within with a value within it added)."""
    return report.fault not in AGAINST_THE_TIER or not misses(call_counts([report], guard), guard)


def misses(counts: CallCounts, guard: FlagGuard) -> set[str]:
    """The guarded figures these counts miss: the same verdicts as `figures` gives."""
    missed = set()
    # p95 (nearest rank) is within the limit iff at least ceil(0.95 n) values are.
    if counts.first_audio and counts.first_audio_within < math.ceil(0.95 * counts.first_audio):
        missed.add("first_audio_p95")
    ratios = (
        ("tool_call_success", counts.tools_ok, counts.tools, guard.tool_success_min),
        ("call_completion", counts.completed, counts.judged, guard.completion_min),
        ("websocket_stability", counts.stable, counts.calls, guard.websocket_stability_min),
    )
    for name, part, whole, target in ratios:
        if whole and not _meets(part / whole, target, True):
            missed.add(name)
    return missed


@dataclass
class Judgement:
    """A scope's (a cohort's, or all of them) figures and what the guard may act on."""

    figures: HealthFigures
    breaches: list[str]
    held_back: list[str]
    by_workspace: dict[str, CallCounts]


def _by_workspace(reports: Iterable[WindowCall]) -> dict[str, list[WindowCall]]:
    grouped: dict[str, list[WindowCall]] = defaultdict(list)
    for report in reports:
        grouped[report.workspace_id].append(report)
    return grouped


def judge(
    scope: str,
    reports: Sequence[WindowCall],
    guard: FlagGuard,
    *,
    min_calls: int,
    min_workspaces: int,
    not_counted: dict[str, int] | None = None,
) -> Judgement:
    """Figures over the calls that count against the tier, and which missed targets hold
    without any one workspace (`evidence.holds_without_any_one`): only those are breaches."""
    counted = [r for r in reports if r.fault in AGAINST_THE_TIER]
    left_out = Counter(r.fault for r in reports if r.fault not in AGAINST_THE_TIER)
    for fault, count in (not_counted or {}).items():
        left_out[fault] += count
    shown = figures(counted, guard)
    by_workspace = {w: call_counts(rows, guard) for w, rows in _by_workspace(counted).items()}
    shown.evidence = summarize({w: c.calls for w, c in by_workspace.items()}, "calls")
    shown.not_counted = dict(sorted(left_out.items()))

    def enough(counts: CallCounts) -> bool:
        return counts.calls >= min_calls

    shown.enough_calls = holds_without_any_one(by_workspace, NO_CALLS, enough, min_workspaces)
    breaches, held_back = [], []
    for name, metric in shown.missed_targets():
        line = f"{scope}: {name} {metric.value} (target {metric.target}, {shown.evidence})"
        if not shown.enough_calls:
            continue  # shown in the figures; too little evidence to act on or explain

        def missed(counts: CallCounts, name: str = name) -> bool:
            return enough(counts) and name in misses(counts, guard)

        decisive = holds_without_any_one(by_workspace, NO_CALLS, missed, min_workspaces)
        if decisive:
            breaches.append(line)
        else:
            pooled = total(by_workspace.values(), NO_CALLS)
            deciders = sorted(w for w, c in by_workspace.items() if not missed(pooled - c))
            shown_deciders = ", ".join(deciders[:5]) + (" …" if len(deciders) > 5 else "")
            held_back.append(f"{line}; not without workspace {shown_deciders}")
    return Judgement(shown, breaches, held_back, by_workspace)


def window_reports(
    session: Session,
    flag_name: str,
    guard: FlagGuard,
    since: datetime,
    until: datetime | None = None,
) -> list[WindowCall]:
    """The flag's calls that started in the window (browser test calls only if the guard says
    so), whatever their fault: `judge` sorts them."""
    columns = [getattr(CallReport, name) for name in WindowCall._fields]
    query = select(*columns).where(
        CallReport.flag == flag_name, col(CallReport.started_at) >= since
    )
    if until is not None:
        query = query.where(col(CallReport.started_at) <= until)
    if not guard.include_test_calls:
        query = query.where(col(CallReport.test_call).is_(False))
    return [WindowCall(*row) for row in session.exec(query)]


def health(
    session: Session,
    flag_name: str,
    *,
    window_seconds: int | None = None,
    now: datetime | None = None,
) -> RolloutHealth:
    return rollout_health(session, flag_name, window_seconds=window_seconds, now=now)[0]


def rollout_health(
    session: Session,
    flag_name: str,
    *,
    window_seconds: int | None = None,
    now: datetime | None = None,
) -> tuple[RolloutHealth, dict[str, Judgement]]:
    """The flag's health in its guard window (since its last pause), overall and per cohort,
    and the judgements behind it (by scope: "overall", "cohort <name>")."""
    flag = rollout.get_flag(session, flag_name)
    guard = get_guard(session, flag_name)
    now = now or utcnow()
    window = window_seconds or guard.window_seconds
    since = now - timedelta(seconds=window)
    if guard.last_paused_at is not None and guard.last_paused_at > since:
        since = guard.last_paused_at
    reports = window_reports(session, flag_name, guard, since)
    by_cohort: dict[str, list[WindowCall]] = defaultdict(list)
    for report in reports:
        by_cohort[report.cohort].append(report)

    def judged(scope: str, rows: Sequence[WindowCall]) -> Judgement:
        return judge(
            scope, rows, guard, min_calls=guard.min_calls, min_workspaces=guard.min_workspaces
        )

    judgements = {"overall": judged("overall", reports)}
    for name, rows in sorted(by_cohort.items()):
        judgements[f"cohort {name}"] = judged(f"cohort {name}", rows)
    cohort_scopes = [scope for scope in judgements if scope != "overall"]
    scopes = [*cohort_scopes, "overall"]
    return (
        RolloutHealth(
            flag=flag_name,
            stage=flag.stage,
            killed=flag.killed,
            window_seconds=window,
            since=since,
            overall=judgements["overall"].figures,
            cohorts={
                scope.removeprefix("cohort "): judgements[scope].figures for scope in cohort_scopes
            },
            breaches=[b for scope in scopes for b in judgements[scope].breaches],
            held_back=[h for scope in scopes for h in judgements[scope].held_back],
            min_workspaces=guard.min_workspaces,
        ),
        judgements,
    )


def workspace_call_health(
    session: Session,
    principal: Principal,
    workspace_id: str,
    *,
    days: int = 7,
    now: datetime | None = None,
) -> WorkspaceCallHealth:
    """The workspace's own calls of the last `days` (test calls included: they are its own),
    for it to see what failed on its side."""
    workspaces.get_workspace(session, principal, workspace_id)
    since = (now or utcnow()) - timedelta(days=days)
    reports = session.exec(
        select(CallReport).where(
            CallReport.workspace_id == workspace_id, col(CallReport.started_at) >= since
        )
    ).all()
    return WorkspaceCallHealth(
        workspace_id=workspace_id,
        window_days=days,
        since=since,
        calls=len(reports),
        by_fault=dict(sorted(Counter(r.fault for r in reports).items())),
        end_reasons=dict(sorted(Counter(r.end_reason for r in reports if not r.completed).items())),
        tool_calls_ok=sum(r.tool_calls_ok for r in reports),
        tool_calls_failed=sum(r.tool_calls_failed for r in reports),
        tool_calls_failed_in_tool=sum(r.tool_calls_failed_in_tool for r in reports),
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
        .where(col(CallReport.fault).in_(AGAINST_THE_TIER))
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
    looks: GuardLooks | None = None,
    new: Sequence[CallReport] = (),
) -> bool:
    """Pause the rollout if a target is breached during internal or beta. True if paused.
    With `looks`, a report of `new` calls that each meet every target skips the look when the
    last one was recent (`GuardLooks`)."""
    guard = get_guard(session, flag_name)
    flag = rollout.get_flag(session, flag_name)
    if not guard.enabled or flag.killed or flag.stage not in PAUSE_TO:
        return False
    settings = (guard.model_dump_json(), flag.stage) if looks is not None else None
    if (
        looks is not None
        and new
        and looks.looked_recently(flag_name, settings)
        and all(meets_every_target(WindowCall.of(call), guard) for call in new)
    ):
        return False
    now = now or utcnow()
    report, judgements = rollout_health(session, flag_name, now=now)
    if looks is not None:
        looks.looked(flag_name, settings)
    if not report.breaches:
        return False
    previous, paused_to = flag.stage, PAUSE_TO[flag.stage]
    rollout.set_stage(session, gate, flag_name, paused_to, actor=GUARD_ACTOR)
    guard.last_paused_at = now
    session.add(guard)
    details = {
        "from": previous,
        "to": paused_to,
        "breaches": report.breaches,
        # Who the calls behind each breach came from, so a reviewer sees whether one
        # customer drove it.
        "evidence": {
            scope: judgement.figures.evidence.model_dump() if judgement.figures.evidence else None
            for scope, judgement in judgements.items()
            if judgement.breaches
        },
        "min_workspaces": guard.min_workspaces,
    }
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
