"""The seed's success metrics beside call health: adoption of grok-realtime among new agents,
usage and what it costs, NPS from call ratings, and transcript accuracy against references.

Plain functions over the database; `now` is a parameter so a simulated month can be replayed.
Browser test calls are kept out of every figure: they are builders trying an agent, not callers.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jiwer
from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from control_plane.auth.principal import Principal
from control_plane.calls.models import Call
from control_plane.catalogue.models import Tier
from control_plane.core import utcnow
from control_plane.errors import ConflictError, InvalidInputError, NotFoundError
from control_plane.insights.models import (
    ACCURACY_TARGET,
    ADOPTION_TARGET,
    GROK_TIER,
    NPS_TARGET,
    Accuracy,
    AccuracyFigures,
    Adoption,
    CallFeedback,
    CallTranscript,
    DayCount,
    FeedbackWrite,
    Nps,
    NpsFigures,
    Target,
    TierUsage,
    Usage,
    WorkspaceUsage,
)
from control_plane.telemetry.evidence import Counts
from control_plane.telemetry.models import CallReport
from control_plane.workspaces.models import Agent, WorkspaceSettings

ADOPTION_WINDOW_DAYS = 30
MAX_TRANSCRIPT_LINES = 2000

# Words as jiwer counts them: case, punctuation and spacing do not make an error.
_WORDS = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.RemovePunctuation(),  # type: ignore[no-untyped-call]
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ]
)


def _target(value: float | None, target: float, samples: int) -> Target:
    return Target(
        value=value, target=target, ok=None if value is None else value >= target, samples=samples
    )


def _day(moment: datetime) -> str:
    return moment.date().isoformat()


# --- the call a rating or a transcript belongs to ------------------------------------------------


def _visible_call(session: Session, principal: Principal, call_id: str) -> Call:
    """An issued call the caller may see: the service, admins, the call's own workspace."""
    call = session.get(Call, call_id)
    if call is None or not (
        principal.is_service or principal.can_access_workspace(call.workspace_id)
    ):
        raise NotFoundError(f"No call {call_id[:64]} was issued.", code="call_not_found")
    return call


def call_connected(session: Session, call: Call) -> bool:
    """A call whose stream was claimed or whose report arrived: one that ran. An issued call
    nobody connected carries no experience to rate (one rating of one made a tier's NPS 100)."""
    return call.claimed_at is not None or session.get(CallReport, call.id) is not None


def _cohort_of(session: Session, call_id: str) -> str:
    report = session.get(CallReport, call_id)
    return report.cohort if report is not None else ""


# --- feedback and NPS ------------------------------------------------------------------------


def record_feedback(
    session: Session,
    principal: Principal,
    call_id: str,
    body: FeedbackWrite,
    *,
    now: datetime | None = None,
) -> CallFeedback:
    """One rating per call, 0-10, for a call that connected; a second one is refused (409),
    the first stays."""
    call = _visible_call(session, principal, call_id)
    if not call_connected(session, call):
        raise ConflictError(
            f"Call {call_id} never connected: only calls that ran can be rated.",
            code="call_not_connected",
        )
    if session.get(CallFeedback, call_id) is not None:
        raise ConflictError(f"Call {call_id} was rated already.", code="feedback_exists")
    feedback = CallFeedback(
        call_id=call.id,
        workspace_id=call.workspace_id,
        tier=call.tier,
        cohort=_cohort_of(session, call.id),
        test_call=call.channel == "browser",
        score=body.score,
        comment=(body.comment or "").strip() or None,
        created_at=now or utcnow(),
        created_by=principal.actor,
    )
    session.add(feedback)
    session.flush()
    return feedback


@dataclass(frozen=True)
class RatingCounts(Counts):
    """One workspace's ratings (or a pool of them): enough to compute an NPS."""

    responses: int = 0
    promoters: int = 0
    detractors: int = 0

    @property
    def size(self) -> int:
        return self.responses

    @property
    def nps(self) -> float | None:
        if not self.responses:
            return None
        return round((self.promoters - self.detractors) / self.responses * 100, 1)

    @classmethod
    def of(cls, scores: Iterable[int]) -> "RatingCounts":
        scores = list(scores)
        return cls(
            responses=len(scores),
            promoters=sum(s >= 9 for s in scores),
            detractors=sum(s <= 6 for s in scores),
        )


def nps_of(scores: Iterable[int]) -> NpsFigures:
    counts = RatingCounts.of(scores)
    return NpsFigures(
        responses=counts.responses,
        promoters=counts.promoters,
        passives=counts.responses - counts.promoters - counts.detractors,
        detractors=counts.detractors,
        nps=_target(counts.nps, NPS_TARGET, counts.responses),
    )


def _ratings(session: Session, since: datetime, until: datetime) -> Sequence[CallFeedback]:
    return session.exec(
        select(CallFeedback)
        .where(col(CallFeedback.created_at) >= since, col(CallFeedback.created_at) <= until)
        .where(col(CallFeedback.test_call).is_(False))
    ).all()


def nps(session: Session, *, days: int = ADOPTION_WINDOW_DAYS, now: datetime | None = None) -> Nps:
    until = now or utcnow()
    since = until - timedelta(days=days)
    ratings = _ratings(session, since, until)
    by_tier: dict[str, list[int]] = defaultdict(list)
    by_cohort: dict[str, list[int]] = defaultdict(list)
    by_week: dict[str, list[int]] = defaultdict(list)
    for rating in ratings:
        by_tier[rating.tier].append(rating.score)
        if rating.tier == GROK_TIER:
            by_cohort[rating.cohort or "(none)"].append(rating.score)
            week = rating.created_at - timedelta(days=rating.created_at.weekday())
            by_week[_day(week)].append(rating.score)
    return Nps(
        window_days=days,
        since=since,
        per_tier={tier: nps_of(scores) for tier, scores in sorted(by_tier.items())},
        per_cohort={cohort: nps_of(s) for cohort, s in sorted(by_cohort.items())},
        per_week=[(week, nps_of(s).nps.value) for week, s in sorted(by_week.items())],
    )


def ratings_by_workspace(
    session: Session, tiers: Sequence[str], since: datetime, until: datetime
) -> dict[str, RatingCounts]:
    """These tiers' calls rated in a window, per workspace: the release plan's NPS gate."""
    scores: dict[str, list[int]] = defaultdict(list)
    for rating in _ratings(session, since, until):
        if rating.tier in tiers:
            scores[rating.workspace_id].append(rating.score)
    return {workspace: RatingCounts.of(s) for workspace, s in sorted(scores.items())}


# --- transcripts and accuracy ------------------------------------------------------------------


def _transcript_opt_in(session: Session, workspace_id: str) -> WorkspaceSettings | None:
    """The workspace's settings if it keeps transcripts; None when it does not."""
    settings = session.get(WorkspaceSettings, workspace_id)
    return settings if settings is not None and settings.keep_transcripts else None


def keep_transcript(
    session: Session, call: Call, lines: Sequence[dict[str, str]] | None, now: datetime
) -> bool:
    """Store a reported call's transcript if, and only if, its workspace opted in."""
    if not lines:
        return False
    settings = _transcript_opt_in(session, call.workspace_id)
    if settings is None:
        return False  # sent anyway (an old runtime, a misconfigured one): dropped, never stored
    if session.get(CallTranscript, call.id) is not None:
        return False
    entries = [{"role": line["role"], "text": line["text"]} for line in lines]
    entries = entries[:MAX_TRANSCRIPT_LINES]
    session.add(
        CallTranscript(
            call_id=call.id,
            workspace_id=call.workspace_id,
            tier=call.tier,
            entries=entries,
            caller_text=" ".join(e["text"] for e in entries if e["role"] == "caller"),
            created_at=now,
            kept_until=now + timedelta(days=settings.transcript_retention_days),
        )
    )
    return True


def get_transcript(session: Session, principal: Principal, call_id: str) -> CallTranscript:
    call = _visible_call(session, principal, call_id)
    transcript = session.get(CallTranscript, call.id)
    if transcript is None:
        raise NotFoundError(
            f"No transcript is kept for call {call_id}: its workspace keeps none, or it expired.",
            code="transcript_not_found",
        )
    return transcript


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(errors, reference words) of a hypothesis against a reference, by jiwer."""
    reference_words = len(_WORDS(reference)[0]) if reference.strip() else 0
    if not hypothesis.strip():
        return reference_words, reference_words  # nothing heard: every word was missed
    out = jiwer.process_words(
        reference, hypothesis, reference_transform=_WORDS, hypothesis_transform=_WORDS
    )
    return out.substitutions + out.deletions + out.insertions, reference_words


def set_reference(
    session: Session, principal: Principal, call_id: str, text: str, *, now: datetime | None = None
) -> CallTranscript:
    """A reviewer's corrected words of the caller; the transcript's accuracy follows from it."""
    transcript = get_transcript(session, principal, call_id)
    errors, words = word_errors(text, transcript.caller_text)
    if words == 0:
        raise InvalidInputError("The reference has no words.", code="empty_reference")
    transcript.reference_text = text
    transcript.reference_by = principal.actor
    # The product team's review, not the call's own workspace judging its own call (nor the
    # service token, which acts for customers' backends): only these count in a release gate.
    transcript.reference_independent = principal.is_admin
    transcript.reference_at = now or utcnow()
    transcript.word_errors, transcript.reference_words = errors, words
    session.add(transcript)
    session.flush()
    return transcript


def _accuracy(word_errors: int, reference_words: int) -> float | None:
    """1 - WER, floored at 0 (insertions can make WER exceed 1)."""
    return max(0.0, 1 - word_errors / reference_words) if reference_words else None


def transcript_accuracy(transcript: CallTranscript) -> float | None:
    return _accuracy(transcript.word_errors or 0, transcript.reference_words or 0)


def purge_transcripts(
    session: Session, *, now: datetime | None = None, workspace_id: str | None = None
) -> int:
    """Delete transcripts past their retention (or all of one workspace's, on demand)."""
    statement = delete(CallTranscript)
    if workspace_id is not None:
        statement = statement.where(col(CallTranscript.workspace_id) == workspace_id)
    else:
        statement = statement.where(col(CallTranscript.kept_until) <= (now or utcnow()))
    return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def apply_retention(
    session: Session, workspace_id: str, days: int, *, now: datetime | None = None
) -> int:
    """A workspace's new retention, for the transcripts it already keeps too: each is kept
    `days` from when it was stored; those already past that are deleted now. Returns how
    many were deleted."""
    now = now or utcnow()
    kept = session.exec(
        select(CallTranscript).where(col(CallTranscript.workspace_id) == workspace_id)
    ).all()
    deleted = 0
    for transcript in kept:
        transcript.kept_until = transcript.created_at + timedelta(days=days)
        if transcript.kept_until <= now:
            session.delete(transcript)
            deleted += 1
        else:
            session.add(transcript)
    session.flush()
    return deleted


def _accuracy_of(transcripts: Sequence[CallTranscript]) -> AccuracyFigures:
    words = sum(t.reference_words or 0 for t in transcripts)
    errors = sum(t.word_errors or 0 for t in transcripts)
    value = _accuracy(errors, words)
    value = None if value is None else round(value, 4)
    return AccuracyFigures(
        reviewed_calls=len(transcripts),
        reference_words=words,
        word_errors=errors,
        accuracy=_target(value, ACCURACY_TARGET, len(transcripts)),
    )


def _reviewed(session: Session, since: datetime, until: datetime) -> Sequence[CallTranscript]:
    return session.exec(
        select(CallTranscript)
        .where(col(CallTranscript.reference_words).is_not(None))
        .where(col(CallTranscript.created_at) >= since, col(CallTranscript.created_at) <= until)
    ).all()


def accuracy(
    session: Session, *, days: int = ADOPTION_WINDOW_DAYS, now: datetime | None = None
) -> Accuracy:
    until = now or utcnow()
    since = until - timedelta(days=days)
    by_tier: dict[str, list[CallTranscript]] = defaultdict(list)
    for transcript in _reviewed(session, since, until):
        by_tier[transcript.tier].append(transcript)
    return Accuracy(
        window_days=days,
        since=since,
        per_tier={tier: _accuracy_of(rows) for tier, rows in sorted(by_tier.items())},
    )


@dataclass(frozen=True)
class ReviewCounts(Counts):
    """One workspace's reviewed calls (or a pool of them): enough to compute accuracy."""

    reviewed_calls: int = 0
    reference_words: int = 0
    word_errors: int = 0

    @property
    def size(self) -> int:
        return self.reviewed_calls

    @property
    def accuracy(self) -> float | None:
        value = _accuracy(self.word_errors, self.reference_words)
        return None if value is None else round(value, 4)


def reviews_by_workspace(
    session: Session, tiers: Sequence[str], since: datetime, until: datetime
) -> dict[str, ReviewCounts]:
    """These tiers' calls reviewed independently (by the product team) in a window, per
    workspace: the release plan's accuracy gate."""
    counts: dict[str, ReviewCounts] = {}
    for transcript in _reviewed(session, since, until):
        if transcript.tier not in tiers or not transcript.reference_independent:
            continue
        review = ReviewCounts(1, transcript.reference_words or 0, transcript.word_errors or 0)
        workspace = transcript.workspace_id
        counts[workspace] = counts.get(workspace, ReviewCounts()) + review
    return dict(sorted(counts.items()))


# --- adoption, usage, cost ---------------------------------------------------------------------


def adoption(
    session: Session, *, days: int = ADOPTION_WINDOW_DAYS, now: datetime | None = None
) -> Adoption:
    """New agents by the tier they were created on; grok-realtime's share over the window
    against the 5 % target, and that share as it stood each day."""
    until = now or utcnow()
    since = until - timedelta(days=days)
    created = session.exec(
        select(Agent.created_at, Agent.created_tier, Agent.pricing_tier).where(
            col(Agent.created_at) > since - timedelta(days=ADOPTION_WINDOW_DAYS),
            col(Agent.created_at) <= until,
        )
    ).all()
    agents = [(at, created_tier or tier) for at, created_tier, tier in created]
    in_window = [(at, tier) for at, tier in agents if at > since]
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    for at, tier in in_window:
        per_day[_day(at)][tier] += 1
    on_grok = sum(1 for _, tier in in_window if tier == GROK_TIER)
    share_per_day = []
    for offset in range(days, -1, -1):
        day_end = until - timedelta(days=offset)
        month = [
            tier
            for at, tier in agents
            if day_end - timedelta(days=ADOPTION_WINDOW_DAYS) < at <= day_end
        ]
        share = sum(1 for t in month if t == GROK_TIER) / len(month) if month else None
        share_per_day.append((_day(day_end), None if share is None else round(share, 4)))
    active = session.exec(
        select(CallReport.tier, func.count(func.distinct(CallReport.agent_id)))
        .where(col(CallReport.started_at) > since, col(CallReport.started_at) <= until)
        .where(col(CallReport.test_call).is_(False))
        .group_by(CallReport.tier)
    ).all()
    share = on_grok / len(in_window) if in_window else None
    return Adoption(
        window_days=days,
        since=since,
        until=until,
        new_agents=len(in_window),
        new_agents_on_grok=on_grok,
        grok_share_of_new_agents=_target(
            None if share is None else round(share, 4), ADOPTION_TARGET, len(in_window)
        ),
        agents_created_per_day=[
            DayCount(day=day, counts=dict(sorted(counts.items())))
            for day, counts in sorted(per_day.items())
        ],
        share_per_day=share_per_day,
        active_agents_per_tier={tier: int(count) for tier, count in sorted(active)},
    )


def usage(
    session: Session, *, days: int = ADOPTION_WINDOW_DAYS, now: datetime | None = None
) -> Usage:
    """Calls and minutes per tier and per workspace, and their cost at each tier's catalogue
    price beside what the same minutes would cost on grok-realtime (Grok is a premium option,
    not a saving)."""
    until = now or utcnow()
    since = until - timedelta(days=days)
    prices = {tier.id: float(tier.cost_per_minute) for tier in session.exec(select(Tier))}
    grok_price = prices.get(GROK_TIER, 0.0)
    rows = session.exec(
        select(
            CallReport.workspace_id,
            CallReport.tier,
            func.count(),
            func.coalesce(func.sum(CallReport.duration_ms), 0),
        )
        .where(col(CallReport.started_at) > since, col(CallReport.started_at) <= until)
        .where(col(CallReport.test_call).is_(False))
        .group_by(CallReport.workspace_id, CallReport.tier)
    ).all()
    tiers: dict[str, dict[str, float]] = defaultdict(lambda: {"calls": 0, "minutes": 0.0})
    workspaces: dict[str, dict[str, float]] = defaultdict(
        lambda: {"calls": 0, "minutes": 0.0, "cost": 0.0}
    )
    for workspace_id, tier, calls, duration_ms in rows:
        minutes = float(duration_ms) / 60_000
        tiers[tier]["calls"] += calls
        tiers[tier]["minutes"] += minutes
        workspaces[workspace_id]["calls"] += calls
        workspaces[workspace_id]["minutes"] += minutes
        workspaces[workspace_id]["cost"] += minutes * prices.get(tier, 0.0)
    per_workspace = []
    for workspace_id, figures in sorted(workspaces.items()):
        on_grok = figures["minutes"] * grok_price
        per_workspace.append(
            WorkspaceUsage(
                workspace_id=workspace_id,
                calls=int(figures["calls"]),
                minutes=round(figures["minutes"], 2),
                cost=round(figures["cost"], 2),
                cost_on_grok=round(on_grok, 2),
                moving_to_grok_costs=round(on_grok - figures["cost"], 2),
            )
        )
    return Usage(
        window_days=days,
        since=since,
        until=until,
        per_tier={
            tier: TierUsage(
                calls=int(f["calls"]),
                minutes=round(f["minutes"], 2),
                cost=round(f["minutes"] * prices.get(tier, 0.0), 2),
            )
            for tier, f in sorted(tiers.items())
        },
        per_workspace=per_workspace,
        grok_price_per_minute=grok_price,
    )


def summary(
    session: Session, *, days: int = ADOPTION_WINDOW_DAYS, now: datetime | None = None
) -> dict[str, Any]:
    """Everything the insights page shows, in one read."""
    return {
        "adoption": adoption(session, days=days, now=now),
        "usage": usage(session, days=days, now=now),
        "nps": nps(session, days=days, now=now),
        "accuracy": accuracy(session, days=days, now=now),
    }
