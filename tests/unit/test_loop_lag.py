"""The event-loop lag monitor behind the worker's switchboard_worker_event_loop_lag_seconds, and
the collector's pauses behind switchboard_worker_gc_pause_seconds."""

import asyncio
import gc
import time

from switchboard_runtime.loop_lag import BUCKETS, GcPauses, LoopLagMonitor


async def test_a_blocked_loop_shows_as_lag_as_long_as_the_block() -> None:
    monitor = LoopLagMonitor(interval=0.005, keep=1000)
    monitor.start()
    await asyncio.sleep(0.05)
    time.sleep(0.08)  # noqa: ASYNC251 - blocking on purpose: the loop runs nothing meanwhile
    await asyncio.sleep(0.03)
    await monitor.stop()

    assert monitor.count == len(monitor.samples) > 2
    # The sample taken across the block waited for all of it but the interval it asked for.
    assert max(monitor.samples) >= 0.08 - 0.005
    assert sum(monitor.counts[BUCKETS.index(0.05) + 1 :]) >= 1  # counted above 50 ms
    assert monitor.quantile(1.0) == max(monitor.samples)


def test_prometheus_buckets_are_cumulative_and_end_at_the_count() -> None:
    monitor = LoopLagMonitor(keep=10)
    for lag in (0.0005, 0.003, 0.003, 0.03, 2.0):
        monitor.record(lag)

    lines = monitor.prometheus("loop_lag_seconds", "test")
    buckets = {
        line.split('le="')[1].split('"')[0]: int(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("loop_lag_seconds_bucket")
    }
    assert buckets["0.001"] == 1 and buckets["0.005"] == 3 and buckets["0.05"] == 4
    assert buckets["1.0"] == 4 and buckets["+Inf"] == 5  # 2 s is above every bound
    assert "loop_lag_seconds_count 5" in lines
    assert any(line.startswith("loop_lag_seconds_sum 2.0365") for line in lines)
    monitor.reset()
    assert monitor.count == 0 and monitor.quantile(0.99) is None


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

    full, young = pauses.generations[2], pauses.generations[0]
    assert full.count == 1 and young.count == 1
    assert full.total > 0
    lines = pauses.prometheus("gc_pause_seconds", "test")
    assert "# TYPE gc_pause_seconds histogram" in lines
    assert 'gc_pause_seconds_bucket{generation="2",le="+Inf"} 1' in lines
    assert 'gc_pause_seconds_count{generation="2"} 1' in lines
    assert sum(line.startswith("gc_pause_seconds_count{") for line in lines) == 3
