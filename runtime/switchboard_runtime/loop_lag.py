"""How late the event loop runs: the one number that says a process bridging calls is saturated.

Every frame of every call on a worker goes through one event loop. When the loop is busy, a
frame that has arrived waits in its socket until the loop comes round, so the loop's lateness is
added to every call's audio at once. The monitor sleeps for a fixed interval again and again and
records how much later than asked it woke up: an idle loop reads ~0, a saturated one reads the
length of its backlog.

The most common stall that is nobody's work is the garbage collector: a full pass over a worker
with 200 live calls holds every call for ~30 ms. `GcPauses` times each collection, by
generation, so a late loop can be told apart from a collecting one.
"""

import asyncio
import bisect
import contextlib
import gc
import time
from collections import deque
from typing import Any

# Histogram bounds in seconds: 20 ms is one audio frame, the budget a bridged frame may lag.
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class Histogram:
    """A cumulative histogram over BUCKETS, as Prometheus keeps them."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one: above the largest bound
        self.total = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def record(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def reset(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def prometheus(self, name: str, help_text: str) -> list[str]:
        """The histogram in Prometheus text format (cumulative `le` buckets)."""
        return [f"# HELP {name} {help_text}", f"# TYPE {name} histogram", *self.series(name)]

    def series(self, name: str, labels: str = "") -> list[str]:
        """The histogram's sample lines, with `labels` (`key="value"`) on each."""
        # One copy, so that a sample recorded meanwhile (a scrape may run on another thread)
        # cannot make the buckets disagree with the count.
        counts, total = list(self.counts), self.total
        extra = f"{labels}," if labels else ""
        tag = f"{{{labels}}}" if labels else ""
        lines, cumulative = [], 0
        for bound, count in zip(BUCKETS, counts, strict=False):
            cumulative += count
            lines.append(f'{name}_bucket{{{extra}le="{bound}"}} {cumulative}')
        lines.append(f'{name}_bucket{{{extra}le="+Inf"}} {sum(counts)}')
        lines.append(f"{name}_sum{tag} {total:.6f}")
        lines.append(f"{name}_count{tag} {sum(counts)}")
        return lines


class LoopLagMonitor(Histogram):
    """Samples the running loop's lateness every `interval` seconds into a cumulative
    histogram (Prometheus) and, when `keep` > 0, the newest `keep` samples (benchmarks)."""

    def __init__(self, interval: float = 0.02, keep: int = 0) -> None:
        super().__init__()
        self.interval = interval
        self.samples: deque[float] = deque(maxlen=keep)
        self._task: asyncio.Task[None] | None = None

    def record(self, seconds: float) -> None:
        super().record(seconds)
        self.samples.append(seconds)

    def reset(self) -> None:
        super().reset()
        self.samples.clear()

    async def run(self) -> None:
        while True:
            asked = time.perf_counter() + self.interval
            await asyncio.sleep(self.interval)
            self.record(max(0.0, time.perf_counter() - asked))

    def start(self) -> None:
        """Start sampling on the running loop (once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def quantile(self, q: float) -> float | None:
        """The q-quantile of the kept samples (None without any)."""
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class GcPauses:
    """How long each garbage collection held the process, per generation (0, 1, 2: 2 is the
    full pass), as cumulative histograms. The collector stops every thread, so this is a pause
    of every call on the worker."""

    def __init__(self) -> None:
        self.generations = [Histogram() for _ in range(3)]
        self._began: float | None = None

    def start(self) -> None:
        if self._on_collection not in gc.callbacks:
            gc.callbacks.append(self._on_collection)

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_collection)

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        elif self._began is not None:
            self.generations[info["generation"]].record(time.perf_counter() - self._began)
            self._began = None

    def prometheus(self, name: str, help_text: str) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for generation, histogram in enumerate(self.generations):
            lines += histogram.series(name, f'generation="{generation}"')
        return lines
