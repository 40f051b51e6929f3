"""Recently verified tokens, so hot paths skip the database and survive a short outage.

A token verified less than `fresh_seconds` ago is trusted without a lookup; while the database
is unreachable, one verified less than `stale_seconds` ago still is. Revocations clear the cache
in every process (change topic "tokens"); a lost change feed only makes every entry re-verify,
keeping it as last known for an outage. Only valid tokens are cached.
"""

import threading
import time

from control_plane.auth.principal import Principal


class TokenCache:
    def __init__(
        self, fresh_seconds: float = 30.0, stale_seconds: float = 600.0, max_size: int = 10_000
    ) -> None:
        self.fresh_seconds = fresh_seconds
        self.stale_seconds = stale_seconds
        self.max_size = max_size
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()
        self._verified_after = 0.0

    def fresh(self, token_hash: str) -> Principal | None:
        entry = self._entries.get(token_hash)
        if (
            entry is not None
            and entry[1] > self._verified_after
            and time.monotonic() - entry[1] < self.fresh_seconds
        ):
            return entry[0]
        return None

    def last_known(self, token_hash: str) -> Principal | None:
        entry = self._entries.get(token_hash)
        if entry is not None and time.monotonic() - entry[1] < self.stale_seconds:
            return entry[0]
        return None

    def put(self, token_hash: str, principal: Principal) -> None:
        with self._lock:
            if len(self._entries) >= self.max_size:
                self._entries.clear()
            self._entries[token_hash] = (principal, time.monotonic())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def require_reverification(self) -> None:
        self._verified_after = time.monotonic()
