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
import contextlib
import gc
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

# Histogram bounds in seconds: 20 ms is one audio frame, the budget a bridged frame may lag.
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class LoopLagMonitor:
    """Samples the running loop's lateness every `interval` seconds. Each sample goes to
    `observe` (the worker's Prometheus histogram) and, when `keep` > 0, into the newest `keep`
    samples (benchmarks read their quantiles)."""

    def __init__(
        self,
        interval: float = 0.02,
        keep: int = 0,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self.interval = interval
        self.samples: deque[float] = deque(maxlen=keep)
        self.observe = observe
        self._task: asyncio.Task[None] | None = None

    def record(self, seconds: float) -> None:
        self.samples.append(seconds)
        if self.observe is not None:
            self.observe(seconds)

    def reset(self) -> None:
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
    full pass). The collector stops every thread, so this is a pause of every call on the worker.

    The collector's callback may run in the middle of any code, including code that holds a
    metrics lock, so it takes none: it appends to a queue (a deque append is atomic) that
    `drain` empties from ordinary code."""

    # Enough for minutes of young collections between two drains; older pauses give way.
    PENDING = 100_000

    def __init__(self) -> None:
        self.pending: deque[tuple[int, float]] = deque(maxlen=self.PENDING)
        self._began: float | None = None

    def start(self) -> None:
        if self._on_collection not in gc.callbacks:
            gc.callbacks.append(self._on_collection)

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_collection)

    def drain(self) -> Iterator[tuple[int, float]]:
        """The pauses recorded since the last drain: (generation, seconds), oldest first."""
        while True:
            try:
                yield self.pending.popleft()
            except IndexError:
                return

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        elif self._began is not None:
            self.pending.append((info["generation"], time.perf_counter() - self._began))
            self._began = None
