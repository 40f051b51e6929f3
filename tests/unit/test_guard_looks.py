"""When a report may skip the guard's look (telemetry/looks.py): the claim it rests on, for
random pools of calls, and the memo of looks."""

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from control_plane.telemetry import faults
from control_plane.telemetry.looks import GuardLooks
from control_plane.telemetry.models import FlagGuard
from control_plane.telemetry.service import WindowCall, judge, meets_every_target

GUARD = FlagGuard(flag="f", min_calls=1, min_workspaces=1)


@st.composite
def a_call(draw: st.DrawFn) -> WindowCall:
    failed = draw(st.integers(0, 2))
    return WindowCall(
        workspace_id=draw(st.sampled_from(["w0", "w1", "w2"])),
        cohort=draw(st.sampled_from(["internal", "beta-1"])),
        fault=draw(st.sampled_from(faults.FAULTS)),
        time_to_first_audio_ms=draw(st.none() | st.floats(0, 3000)),
        setup_wait_ms=None,
        first_audio_relay_ms=None,
        warm_start=None,
        completed=draw(st.booleans()),
        websocket_disconnects=draw(st.integers(0, 1)),
        tool_calls_ok=draw(st.integers(0, 3) | st.integers(19, 40)),  # one miss in 20 is 95 %
        tool_calls_failed=failed,
        tool_calls_failed_in_tool=draw(st.integers(0, failed)),
    )


def misses(calls: list[WindowCall]) -> set[str]:
    """What `guard_check` asks of a look: the targets the pool misses, however few calls."""
    judged = judge("overall", calls, GUARD, min_calls=1, min_workspaces=1)
    return {name for name, _metric in judged.figures.missed_targets()}


good_calls = st.lists(a_call().filter(lambda call: meets_every_target(call, GUARD)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(good_calls, st.lists(a_call(), max_size=4), good_calls.filter(bool))
def test_calls_that_meet_every_target_leave_a_clean_pool_clean(
    good: list[WindowCall], any_calls: list[WindowCall], added: list[WindowCall]
) -> None:
    pool = good + any_calls  # mostly good, so that many pools are clean
    assume(not misses(pool))
    assert not misses(pool + added)


@settings(max_examples=300, deadline=None)
@given(a_call())
def test_a_call_that_misses_a_target_turns_some_clean_pool(call: WindowCall) -> None:
    """The test above is not empty: any other call can turn a pool (here: the empty one)."""
    assume(not meets_every_target(call, GUARD))
    assert misses([call])


def test_a_look_holds_for_the_interval_under_the_same_settings() -> None:
    now = [100.0]
    looks = GuardLooks(interval_seconds=1.0, clock=lambda: now[0])
    assert not looks.looked_recently("f", "settings-a")
    looks.looked("f", "settings-a")
    assert looks.looked_recently("f", "settings-a")
    assert not looks.looked_recently("f", "settings-b")  # the guard or the stage changed
    assert not looks.looked_recently("g", "settings-a")
    now[0] = 100.999
    assert looks.looked_recently("f", "settings-a")
    now[0] = 101.0
    assert not looks.looked_recently("f", "settings-a")  # the window may have slid since
    looks.looked("f", "settings-b")
    assert not looks.looked_recently("f", "settings-a")  # the last look was under others
    never = GuardLooks(interval_seconds=0, clock=lambda: now[0])
    never.looked("f", "settings-a")
    assert not never.looked_recently("f", "settings-a")
