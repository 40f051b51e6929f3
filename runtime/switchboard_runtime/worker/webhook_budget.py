"""How many refused webhooks a client address may have the control plane check.

The worker cannot check a webhook's signature itself (each workspace's secret stays with the
control plane), so every webhook, signed or not, costs a control-plane request and one of the
worker's places in its bound on them (`CONTROL_PLANE_MAX_CONCURRENT_REQUESTS`): a flood of
unsigned webhooks from one address queues the real calls' webhooks behind it. Past
`per_minute` webhooks the control plane refused in the last minute, the worker answers that
address's next webhooks 403 itself, without asking.

An address that had a webhook accepted in the last `vouched_seconds` is never held back: the
phone provider's own addresses, and a load balancer missing from `TRUSTED_PROXIES` (every
client then shares its address; holding it back would refuse every call). Addresses are kept
for at most `max_addresses`; past that the oldest half is forgotten.
"""

import time
from collections import deque
from collections.abc import Callable
from typing import Any


class WebhookRefusalBudget:
    def __init__(
        self,
        per_minute: int,
        vouched_seconds: float = 3600.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.vouched_seconds = vouched_seconds
        self.max_addresses = max_addresses
        self.clock = clock
        self.held_back = 0  # webhooks answered 403 without asking the control plane
        self._refusals: dict[str, deque[float]] = {}
        self._accepted_at: dict[str, float] = {}

    def allows(self, address: str) -> bool:
        """Whether this address's webhook goes to the control plane."""
        now = self.clock()
        accepted_at = self._accepted_at.get(address)
        if accepted_at is not None and now - accepted_at < self.vouched_seconds:
            return True
        refusals = self._refusals.get(address)
        if refusals is None:
            return True
        while refusals and now - refusals[0] >= 60.0:
            refusals.popleft()
        if len(refusals) < self.per_minute:
            return True
        self.held_back += 1
        return False

    def refused(self, address: str) -> None:
        """The control plane refused this address's webhook (a signature, a malformed body)."""
        refusals = self._refusals.get(address)
        if refusals is None:
            refusals = self._refusals[address] = deque(maxlen=self.per_minute)
            self._forget_oldest(self._refusals)
        refusals.append(self.clock())

    def accepted(self, address: str) -> None:
        """The control plane issued a call on this address's webhook."""
        self._refusals.pop(address, None)
        self._accepted_at.pop(address, None)  # re-inserted last: the newest
        self._accepted_at[address] = self.clock()
        self._forget_oldest(self._accepted_at)

    def _forget_oldest(self, kept: dict[str, Any]) -> None:
        if len(kept) > self.max_addresses:
            for address in list(kept)[: len(kept) // 2]:  # dicts keep insertion order
                del kept[address]
