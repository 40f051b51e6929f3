"""Properties of the rule that no single workspace moves a rollout (telemetry/evidence.py), for
random mixes of workspaces, outcomes and faults. The oracle is computed from the raw calls and
scores (`figures`, `nps_of` over rows), not from the sums the rule works on."""

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.insights.service import RatingCounts, nps_of
from control_plane.telemetry import faults
from control_plane.telemetry.evidence import holds_without_any_one
from control_plane.telemetry.models import CallReport, FlagGuard
from control_plane.telemetry.service import figures, judge

WORKSPACES = ["w0", "w1", "w2", "w3", "w4"]
STARTED = datetime(2026, 12, 1, tzinfo=UTC)

# What can happen to a call: how it ends and what its report says.
OUTCOMES = {
    "fine": {"end_reason": "caller_hangup", "completed": True},
    "slow": {"end_reason": "caller_hangup", "completed": True, "time_to_first_audio_ms": 2500.0},
    "xai_down": {"end_reason": "xai_unavailable", "completed": False},
    "xai_error": {"end_reason": "xai_error", "completed": False},
    "dropped": {"end_reason": "xai_disconnected", "completed": False, "websocket_disconnects": 1},
    "own_key": {"end_reason": "xai_key_refused", "completed": False},
    "own_tool": {
        "end_reason": "caller_hangup",
        "completed": True,
        "tool_calls_failed": 2,
        "tool_calls_failed_in_tool": 2,
    },
    "model_tool": {"end_reason": "caller_hangup", "completed": True, "tool_calls_failed": 1},
    "gave_up": {
        "end_reason": "caller_hangup",
        "completed": True,
        "duration_ms": 500.0,
        "time_to_first_audio_ms": None,
    },
    "deploy": {"end_reason": "worker_shutdown", "completed": False},
}


def report(index: int, workspace: str, outcome: str) -> CallReport:
    fields = {
        "end_reason": "caller_hangup",
        "completed": True,
        "duration_ms": 60_000.0,
        "time_to_first_audio_ms": 600.0,
        "tool_calls_ok": 1,
        **OUTCOMES[outcome],
    }
    row = CallReport(
        call_id=f"c{index}",
        workspace_id=workspace,
        agent_id="a",
        tier="grok-realtime",
        engine="grok-realtime",
        started_at=STARTED,
        **fields,
    )
    row.fault = faults.attribute(row)
    return row


calls = st.lists(
    st.tuples(st.sampled_from(WORKSPACES), st.sampled_from(sorted(OUTCOMES))),
    min_size=0,
    max_size=80,
).map(lambda drawn: [report(i, w, o) for i, (w, o) in enumerate(drawn)])

GUARD = FlagGuard(flag="f", min_calls=5)


def missed_pooled(rows: list[CallReport]) -> set[str]:
    """The oracle: the targets the rows miss, pooled, with enough calls (row-based figures)."""
    counted = [r for r in rows if r.fault in faults.AGAINST_THE_TIER]
    shown = figures(counted, GUARD)
    if len(counted) < GUARD.min_calls:
        return set()
    return {name for name, _metric in shown.missed_targets()}


def breaches(rows: list[CallReport], min_workspaces: int) -> set[str]:
    judged = judge("overall", rows, GUARD, min_calls=GUARD.min_calls, min_workspaces=min_workspaces)
    return {line.split(": ", 1)[1].split(" ", 1)[0] for line in judged.breaches}


@settings(max_examples=300, deadline=None)
@given(calls)
def test_a_breach_never_rests_on_one_workspace(rows: list[CallReport]) -> None:
    """Whatever the rule acts on is missed without each workspace's calls too."""
    acted_on = breaches(rows, min_workspaces=2)
    for workspace in {r.workspace_id for r in rows}:
        without = [r for r in rows if r.workspace_id != workspace]
        assert acted_on <= missed_pooled(without), workspace
    if acted_on:
        assert len({r.workspace_id for r in rows if r.fault in faults.AGAINST_THE_TIER}) >= 2


@settings(max_examples=300, deadline=None)
@given(calls)
def test_pooled_with_one_workspace_allowed_the_rule_is_the_old_one(rows: list[CallReport]) -> None:
    assert breaches(rows, min_workspaces=1) == missed_pooled(rows)


@settings(max_examples=300, deadline=None)
@given(calls)
def test_failures_a_workspace_or_caller_caused_never_change_a_decision(
    rows: list[CallReport],
) -> None:
    theirs = [r for r in rows if r.fault not in faults.AGAINST_THE_TIER]
    assert {r.end_reason for r in theirs} <= {"xai_key_refused", "caller_hangup"}
    others = [r for r in rows if r.fault in faults.AGAINST_THE_TIER]
    for min_workspaces in (1, 2):
        assert breaches(rows, min_workspaces) == breaches(others, min_workspaces)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(WORKSPACES), st.lists(st.integers(0, 10), max_size=15), max_size=5
    ),
    st.integers(-100, 100),
)
def test_an_nps_gate_that_passes_passes_without_each_workspace(
    scores: dict[str, list[int]], nps_min: int
) -> None:
    by_workspace = {w: RatingCounts.of(s) for w, s in scores.items()}

    def passes(counts: RatingCounts) -> bool:
        return counts.responses >= 3 and (counts.nps or 0) >= nps_min

    if holds_without_any_one(by_workspace, RatingCounts(), passes, min_workspaces=2):
        for workspace in scores:
            rest = [s for w, ws in scores.items() if w != workspace for s in ws]
            oracle = nps_of(rest)
            assert oracle.responses >= 3 and (oracle.nps.value or 0) >= nps_min
        assert sum(1 for s in scores.values() if s) >= 2
