"""The event-loop lag monitor and the collector's pauses, and the worker's /metrics built on them
by prometheus-client, read back with prometheus-client's own text parser."""

import asyncio
import gc
import logging
import time
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from starlette.datastructures import State

from switchboard_runtime.logging import RepeatedWarnings
from switchboard_runtime.loop_lag import GcPauses, LoopLagMonitor
from switchboard_runtime.worker.capacity import CallCapacity, PreStartSockets
from switchboard_runtime.worker.metrics import WorkerMetrics, WorkerState
from switchboard_runtime.worker.native_relays import AudioFrames
from switchboard_runtime.worker.settings import SettingsError, WorkerSettings, load_settings


async def test_a_blocked_loop_shows_as_lag_as_long_as_the_block() -> None:
    observed: list[float] = []
    monitor = LoopLagMonitor(interval=0.005, keep=1000, observe=observed.append)
    monitor.start()
    await asyncio.sleep(0.05)
    time.sleep(0.08)  # noqa: ASYNC251 - blocking on purpose: the loop runs nothing meanwhile
    await asyncio.sleep(0.03)
    await monitor.stop()

    assert observed == list(monitor.samples) and len(observed) > 2
    # The sample taken across the block waited for all of it but the interval it asked for.
    assert max(monitor.samples) >= 0.08 - 0.005
    assert monitor.quantile(1.0) == max(monitor.samples)
    monitor.reset()
    assert monitor.quantile(0.99) is None


def test_each_collection_is_timed_under_its_generation_until_stopped() -> None:
    pauses = GcPauses()
    pauses.start()
    pauses.start()  # once only, however often started
    gc.disable()  # only the collections below: none the allocations (or other threads) start
    try:
        garbage = [[] for _ in range(50_000)]
        for item in garbage:
            item.append(item)  # cycles: only a collection frees them
        del garbage, item
        gc.collect()
        gc.collect(0)
    finally:
        pauses.stop()
        gc.enable()
    gc.collect()  # not timed: stopped

    recorded = list(pauses.drain())
    assert [generation for generation, _ in recorded] == [2, 0]
    assert all(seconds > 0 for _, seconds in recorded)
    assert list(pauses.drain()) == []  # each pause is handed over once


def worker_state() -> State:
    state = State()
    state.capacity = CallCapacity(10, hold_seconds=5)
    state.pre_start = PreStartSockets(8, 2)
    state.call_starts = Counter({"warm": 3, "cold": 1, "browser": 0})
    state.audio_frames = AudioFrames({("caller", "compiled"): 40, ("agent", "python"): 2})
    state.refusals = RepeatedWarnings(logging.getLogger("test.refusals"))
    state.refusals.counts.update({"stream:no_usable_token": 2})
    return state


def families(metrics: WorkerMetrics) -> dict[str, list[Sample]]:
    text = metrics.exposition().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_worker_metrics_parse_and_keep_their_names_and_labels() -> None:
    state = worker_state()
    pauses = GcPauses()
    metrics = WorkerMetrics(WorkerState(state), pauses, loop_lag_interval=0.1)
    for lag in (0.0005, 0.003, 0.003, 0.03, 2.0):
        metrics.observe_loop_lag(lag)
    pauses.pending.append((2, 0.04))  # as the collector's callback leaves it

    found = families(metrics)

    lag = {s.labels.get("le"): s.value for s in found["switchboard_worker_event_loop_lag_seconds"]}
    assert lag["0.001"] == 1 and lag["0.005"] == 3 and lag["0.05"] == 4
    assert lag["1.0"] == 4 and lag["+Inf"] == 5  # 2 s is above every bound: cumulative buckets
    counts = {
        s.labels["generation"]: s.value
        for s in found["switchboard_worker_gc_pause_seconds"]
        if s.name.endswith("_count")
    }
    assert counts == {"0": 0, "1": 0, "2": 1}  # every generation present from the start
    starts = {
        s.labels["path"]: s.value
        for s in found["switchboard_worker_call_starts"]
        if s.name == "switchboard_worker_call_starts_total"
    }
    assert starts == {"warm": 3, "cold": 1, "browser": 0}
    frames = {
        (s.labels["direction"], s.labels["path"]): s.value
        for s in found["switchboard_worker_audio_frames"]
    }
    assert frames == {
        ("caller", "compiled"): 40,
        ("caller", "python"): 0,
        ("agent", "compiled"): 0,
        ("agent", "python"): 2,
    }
    assert [s.value for s in found["switchboard_worker_max_calls"]] == [10]
    assert [s.value for s in found["switchboard_worker_calls"]] == [0]
    assert {s.labels["reason"] for s in found["switchboard_worker_calls_refused"]} == {
        "at_capacity",
        "stopping",
    }
    refusals = {
        s.labels["kind"]: s.value
        for s in found["switchboard_worker_refusals"]
        if s.name == "switchboard_worker_refusals_total"
    }
    assert refusals == {"stream:no_usable_token": 2}
    assert {s.labels["reason"] for s in found["switchboard_worker_pre_start_closed"]} == {
        "per_address",
        "evicted",
    }
    # Warm sessions exist from start-up on; before it, no series rather than made-up zeros.
    assert "switchboard_worker_warm_sessions" not in found


def test_worker_metrics_read_the_state_the_app_holds_now() -> None:
    state = worker_state()
    metrics = WorkerMetrics(WorkerState(state), GcPauses(), loop_lag_interval=0.1)
    state.capacity = CallCapacity(None, hold_seconds=5)  # replaced: as a route would see it
    state.capacity.hold("call-1")
    found = families(metrics)
    assert [s.value for s in found["switchboard_worker_calls"]] == [1]
    assert "switchboard_worker_max_calls" not in found  # no limit, no gauge


def test_the_worker_samples_its_loop_every_100_ms_and_no_faster_than_every_5(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings(WorkerSettings).worker_loop_lag_interval_seconds == 0.1
    monkeypatch.setenv("SWITCHBOARD_WORKER_LOOP_LAG_INTERVAL_SECONDS", "0.001")
    with pytest.raises(SettingsError) as refused:
        load_settings(WorkerSettings)
    assert refused.value.lines == [
        "SWITCHBOARD_WORKER_LOOP_LAG_INTERVAL_SECONDS: Input should be greater than or equal to "
        "0.005"
    ]
