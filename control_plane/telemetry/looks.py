"""When each flag's guard last looked, in this process.

A guard look reads every call of the flag in its window (`service.rollout_health`), and one
could follow every report, so at a high call rate a control plane would spend its time looking.
A report whose calls each meet every target skips the look when the last one, under the same
guard settings, stage and pause, was less than `interval_seconds` ago; a report with any call
that misses a target looks at once. So healthy traffic costs at most one look per flag per
interval, whatever the last look found, and a regression is judged as its first call is
reported.

What a skip can delay (to the first report after the interval):
- after a look that found every target met, nothing that healthy calls do: a pooled ratio lies
  between the pool's and the call's, a nearest-rank p95 within its limit stays within with
  values within it added, and a breach needs a pooled miss first; only calls leaving the window
  can turn a figure;
- after a look that found a miss it could not act on (too few calls or workspaces, or a miss
  that does not hold without any one workspace), the pause that healthy calls make possible by
  bringing the counts up while the pooled figure still misses.
"""

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass
class GuardLooks:
    """Per control-plane process; `interval_seconds` 0: every report looks."""

    interval_seconds: float
    clock: Callable[[], float] = time.monotonic
    _last: dict[str, tuple[float, Hashable]] = field(default_factory=dict)

    def looked_recently(self, flag: str, settings: Hashable) -> bool:
        """Whether the guard looked at `flag` under `settings` within the interval."""
        last = self._last.get(flag)
        return (
            self.interval_seconds > 0
            and last is not None
            and last[1] == settings
            and self.clock() - last[0] < self.interval_seconds
        )

    def looked(self, flag: str, settings: Hashable) -> None:
        self._last[flag] = (self.clock(), settings)
