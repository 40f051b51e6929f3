"""A sliding-window limit per key, in this process (a request budget, not a security boundary
on its own: sign-in throttling, which is one, keeps its counts in the database)."""

import math
import threading
import time
from collections import deque


class SlidingWindowLimit:
    def __init__(self, limit: int, window_seconds: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self.max_keys = max_keys
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> int | None:
        """Take one from the key's budget: None when allowed, else seconds until it frees up."""
        now = time.monotonic()
        with self._lock:
            events = self._events.get(key)
            if events is None:
                if len(self._events) >= self.max_keys:
                    self._events.clear()
                events = self._events[key] = deque()
            while events and now - events[0] >= self.window_seconds:
                events.popleft()
            if len(events) >= self.limit:
                return max(1, math.ceil(self.window_seconds - (now - events[0])))
            events.append(now)
            return None
