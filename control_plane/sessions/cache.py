"""Pre-serialized session configs per (workspace, agent, credentials mode).

An entry is valid until a change topic says otherwise: "config:<workspace>" for that workspace's
agents, keys and settings; "config:*", "flags" and "resync" for everything. An invalidated entry
is kept as the last known good answer for when the database is unreachable.
"""

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from control_plane.changes import RESYNC
from control_plane.rollout.gate import FLAGS_TOPIC
from control_plane.served import Served
from control_plane.sessions.models import ResolvedSessionConfig

CacheKey = tuple[str, str, str, str]  # workspace, agent, credentials mode, audio channel
WORKSPACE_TOPIC_PREFIX = "config:"
EVERYTHING = {"config:*", FLAGS_TOPIC, RESYNC}


# A config holds a key or a client secret: no shared cache may keep it.
NO_STORE = "no-store"


@dataclass
class CachedConfig:
    config: ResolvedSessionConfig
    served: Served
    valid: bool = True
    # Ephemeral credentials expire: the entry must be rebuilt before they do.
    valid_until: float | None = None
    _stale: Served | None = field(default=None, repr=False)

    @property
    def usable(self) -> bool:
        return self.valid and (self.valid_until is None or time.time() < self.valid_until)

    @property
    def stale(self) -> Served:
        """The same config marked `"stale": true`, for when the database is unreachable."""
        if self._stale is None:
            body = serialize(self.config.model_copy(update={"stale": True}))
            self._stale = Served.of(body, NO_STORE)
        return self._stale


def serialize(config: ResolvedSessionConfig) -> bytes:
    return json.dumps(config.model_dump(mode="json"), separators=(",", ":")).encode()


class ConfigCache:
    def __init__(self, max_entries: int, ephemeral_margin_seconds: int = 60) -> None:
        self.max_entries = max_entries
        self.ephemeral_margin_seconds = ephemeral_margin_seconds
        self._entries: OrderedDict[CacheKey, CachedConfig] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey) -> CachedConfig | None:
        """A valid entry, or None (counted as a miss)."""
        entry = self._entries.get(key)
        if entry is not None and entry.usable:
            self.hits += 1
            return entry
        self.misses += 1
        return None

    def last_known(self, key: CacheKey) -> CachedConfig | None:
        return self._entries.get(key)

    def put(self, key: CacheKey, config: ResolvedSessionConfig) -> CachedConfig:
        valid_until = None
        if config.credentials is not None and config.credentials.expires_at is not None:
            valid_until = config.credentials.expires_at - self.ephemeral_margin_seconds
        entry = CachedConfig(
            config=config, served=Served.of(serialize(config), NO_STORE), valid_until=valid_until
        )
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return entry

    def invalidate(self, topic: str) -> None:
        if topic in EVERYTHING:
            workspace = None
        elif topic.startswith(WORKSPACE_TOPIC_PREFIX):
            workspace = topic[len(WORKSPACE_TOPIC_PREFIX) :]
        else:
            return
        with self._lock:
            for key, entry in self._entries.items():
                if workspace is None or key[0] == workspace:
                    entry.valid = False

    def __len__(self) -> int:
        return len(self._entries)
