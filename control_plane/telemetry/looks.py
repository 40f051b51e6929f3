"""When each flag's guard last looked and found every target met, in this process.

A guard look reads every call of the flag in its window (`service.rollout_health`), and one
follows every report, so at a high call rate a control plane would spend its time looking. A
report of calls that each meet every target cannot make a look that found every target met
find a miss: a pooled ratio lies between the pool's and the call's, a nearest-rank p95 within its
limit stays within with values within it added, and a breach needs a pooled miss first. Such a
report skips the look if the last one, under the same guard settings, stage and pause, was
less than `interval_seconds` ago. What the skip can miss is a window that slid: calls leaving
it can turn a figure; the first report after the interval looks again.
"""

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass
class GuardLooks:
    """Per control-plane process; `interval_seconds` 0: every report looks."""

    interval_seconds: float
    clock: Callable[[], float] = time.monotonic
    _clean: dict[str, tuple[float, Hashable]] = field(default_factory=dict)

    def clean_recently(self, flag: str, settings: Hashable) -> bool:
        """Whether a look at `flag` under `settings` found every target met within the
        interval."""
        last = self._clean.get(flag)
        return (
            self.interval_seconds > 0
            and last is not None
            and last[1] == settings
            and self.clock() - last[0] < self.interval_seconds
        )

    def looked(self, flag: str, settings: Hashable, every_target_met: bool) -> None:
        if every_target_met:
            self._clean[flag] = (self.clock(), settings)
        else:
            self._clean.pop(flag, None)
