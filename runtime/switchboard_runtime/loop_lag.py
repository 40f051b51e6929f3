"""How late the event loop runs: the one number that says a process bridging calls is saturated.

Every frame of every call on a worker goes through one event loop. When the loop is busy, a
frame that has arrived waits in its socket until the loop comes round, so the loop's lateness is
added to every call's audio at once. The monitor sleeps for a fixed interval again and again and
records how much later than asked it woke up: an idle loop reads ~0, a saturated one reads the
length of its backlog.
"""

import asyncio
import bisect
import contextlib
import time
from collections import deque

# Histogram bounds in seconds: 20 ms is one audio frame, the budget a bridged frame may lag.
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class LoopLagMonitor:
    """Samples the running loop's lateness every `interval` seconds into a cumulative
    histogram (Prometheus) and, when `keep` > 0, the newest `keep` samples (benchmarks)."""

    def __init__(self, interval: float = 0.02, keep: int = 0) -> None:
        self.interval = interval
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one: above the largest bound
        self.total = 0.0
        self.samples: deque[float] = deque(maxlen=keep)
        self._task: asyncio.Task[None] | None = None

    @property
    def count(self) -> int:
        return sum(self.counts)

    def record(self, lag: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, lag)] += 1
        self.total += lag
        self.samples.append(lag)

    def reset(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
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

    def prometheus(self, name: str, help_text: str) -> list[str]:
        """The histogram in Prometheus text format (cumulative `le` buckets)."""
        # One copy, so that a sample recorded meanwhile (a scrape may run on another thread)
        # cannot make the buckets disagree with the count.
        counts, total = list(self.counts), self.total
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, count in zip(BUCKETS, counts, strict=False):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {sum(counts)}')
        lines.append(f"{name}_sum {total:.6f}")
        lines.append(f"{name}_count {sum(counts)}")
        return lines
