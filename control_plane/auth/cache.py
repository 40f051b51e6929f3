"""Recently verified tokens, so hot paths skip the database and survive a short outage.

A token verified less than `fresh_seconds` ago is trusted without a lookup; while the database
is unreachable, one verified less than `stale_seconds` ago still is. Revocations clear the cache
in every process (change topic "tokens"); a lost change feed only makes every entry re-verify,
keeping it as last known for an outage. Only valid tokens are cached.

A busy token is re-verified before its window ends: once an entry is past half of it, the first
caller to ask wins `claim_reverification` and has the token looked up again (the hot-read lane in
a worker thread, the routes inline) while every other request keeps trusting the entry. Without
that, the moment a busy token's window ended every request in flight fell to the database and
the slow routes at once: a stall of tens of milliseconds every `fresh_seconds` under load. No
entry is trusted past `fresh_seconds` either way.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from control_plane.auth.principal import Principal


@dataclass
class _Entry:
    principal: Principal
    verified_at: float
    claimed_at: float | None = None


class TokenCache:
    def __init__(
        self,
        fresh_seconds: float = 30.0,
        stale_seconds: float = 600.0,
        max_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fresh_seconds = fresh_seconds
        self.stale_seconds = stale_seconds
        self.max_size = max_size
        self.clock = clock
        self.reverify_after = fresh_seconds / 2
        # A re-verification that never came back (database down) lapses, so another caller
        # tries; the entry's window still ends on time meanwhile.
        self.claim_seconds = min(5.0, fresh_seconds / 4)
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._verified_after = 0.0
        self._cleared_at = 0.0

    def fresh(self, token_hash: str) -> Principal | None:
        entry = self._entries.get(token_hash)
        if (
            entry is not None
            and entry.verified_at > self._verified_after
            and self.clock() - entry.verified_at < self.fresh_seconds
        ):
            return entry.principal
        return None

    def claim_reverification(self, token_hash: str) -> bool:
        """True once for a fresh entry past half its window: the caller looks the token up
        again and `put`s (or `forget`s) it; everybody else keeps trusting the entry."""
        entry = self._entries.get(token_hash)
        now = self.clock()
        if entry is None or now - entry.verified_at < self.reverify_after:
            return False
        with self._lock:
            if entry.claimed_at is not None and now - entry.claimed_at < self.claim_seconds:
                return False
            entry.claimed_at = now
        return True

    def last_known(self, token_hash: str) -> Principal | None:
        entry = self._entries.get(token_hash)
        if entry is not None and self.clock() - entry.verified_at < self.stale_seconds:
            return entry.principal
        return None

    def put(self, token_hash: str, principal: Principal, looked_up_at: float) -> None:
        """Keep what a lookup begun at `looked_up_at` (this cache's clock) found, unless the
        cache was cleared since: a revocation may have committed behind that lookup's back."""
        with self._lock:
            if looked_up_at <= self._cleared_at:
                return
            if len(self._entries) >= self.max_size:
                self._entries.clear()
            self._entries[token_hash] = _Entry(principal, looked_up_at)

    def forget(self, token_hash: str) -> None:
        """Drop one entry: its token no longer verifies."""
        with self._lock:
            self._entries.pop(token_hash, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._cleared_at = self.clock()

    def require_reverification(self) -> None:
        self._verified_after = self.clock()
