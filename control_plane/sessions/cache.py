"""Pre-serialized session configs per (workspace, agent, credentials mode, audio channel), and
the parts they are rebuilt from.

An entry is served while its stamp (catalogue, flags and its workspace; see `kept.py`) is
current. One that is not is kept as the last known good answer for when the database is
unreachable. `ConfigParts` keeps what a config needs from the database (the agent, the
workspace's key) per workspace stamp, so a catalogue edit or a flag change rebuilds every config
without a database round trip.
"""

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from control_plane.kept import Generations, Stamp, StampedMap
from control_plane.rollout.models import FlagDecision
from control_plane.served import Served
from control_plane.sessions.models import ResolvedSessionConfig
from control_plane.workspaces.service import AgentSnapshot

CacheKey = tuple[str, str, str, str]  # workspace, agent, credentials mode, audio channel


# A config holds a key or a client secret: no shared cache may keep it.
NO_STORE = "no-store"


@dataclass(frozen=True)
class ConfigBasis:
    """What of the catalogue and the flags a config was built from. When only the catalogue or
    flag counters moved and this is unchanged, the config still holds: a tier edit rebuilds
    the configs of that tier's agents, not every config."""

    workspace_id: str
    tier_id: str
    tier_version: int
    voice_map_version: int
    flag_version: int
    decision: FlagDecision | None


Revalidate = Callable[[ConfigBasis], bool]


@dataclass
class CachedConfig:
    """A config as it is served. Only its bytes are kept, not the model they came from: a
    thousand kept model trees would be a third of what every full garbage collection walks."""

    served: Served
    stamp: Stamp
    basis: ConfigBasis | None = None
    # Ephemeral credentials expire: the entry must be rebuilt before they do.
    valid_until: float | None = None
    _stale: Served | None = field(default=None, repr=False)

    def expired(self) -> bool:
        return self.valid_until is not None and time.time() >= self.valid_until

    def usable(self, stamp: Stamp) -> bool:
        return self.stamp == stamp and not self.expired()

    @property
    def stale(self) -> Served:
        """The same config marked `"stale": true`, for when the database is unreachable."""
        if self._stale is None:
            document = json.loads(self.served.body)
            document["stale"] = True
            self._stale = Served.of(dump(document), NO_STORE)
        return self._stale


def serialize(config: ResolvedSessionConfig) -> bytes:
    return dump(config.model_dump(mode="json"))


def dump(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


class ConfigCache:
    def __init__(
        self,
        generations: Generations,
        max_entries: int,
        ephemeral_margin_seconds: int = 60,
        revalidate: Revalidate | None = None,
    ) -> None:
        self.generations = generations
        self.revalidate = revalidate
        self.max_entries = max_entries
        self.ephemeral_margin_seconds = ephemeral_margin_seconds
        self._entries: OrderedDict[CacheKey, CachedConfig] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def stamp(self, key: CacheKey) -> Stamp:
        """What an entry for `key` built now must be built from: read it before building."""
        return self.generations.everything(key[0])

    def get(self, key: CacheKey) -> CachedConfig | None:
        """A current entry, or None (counted as a miss)."""
        entry = self._entries.get(key)
        if entry is not None:
            current = self.generations.everything(key[0])
            if entry.usable(current) or self._still_holds(entry, current):
                self.hits += 1
                return entry
        self.misses += 1
        return None

    def _still_holds(self, entry: CachedConfig, current: Stamp) -> bool:
        """Only catalogue or flag counters moved (stamp: epoch, catalogue, flags, workspace) and
        the entry's basis is unchanged: stamp it current instead of rebuilding it."""
        if (
            self.revalidate is None
            or entry.basis is None
            or entry.stamp[0] != current[0]
            or entry.stamp[3] != current[3]
            or entry.expired()
            or not self.revalidate(entry.basis)
        ):
            return False
        entry.stamp = current  # read before revalidating: a later change still shows
        return True

    def last_known(self, key: CacheKey) -> CachedConfig | None:
        return self._entries.get(key)

    def put(
        self,
        key: CacheKey,
        config: ResolvedSessionConfig,
        stamp: Stamp,
        basis: ConfigBasis | None = None,
    ) -> CachedConfig:
        valid_until = None
        if config.credentials is not None and config.credentials.expires_at is not None:
            valid_until = config.credentials.expires_at - self.ephemeral_margin_seconds
        body = serialize(config)
        previous = self._entries.get(key)
        # The same bytes keep the same Served: its ETag is what callers revalidate with.
        served = (
            previous.served
            if previous is not None and previous.served.body == body
            else Served.of(body, NO_STORE)
        )
        entry = CachedConfig(served=served, stamp=stamp, basis=basis, valid_until=valid_until)
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return entry

    def __len__(self) -> int:
        return len(self._entries)


class ConfigParts:
    """What a config needs from the database, kept per workspace stamp: agents and keys.

    A plain key is kept here as it is in every cached config that carries it: in this process's
    memory only, never serialized anywhere else.
    """

    def __init__(self, generations: Generations, max_entries: int) -> None:
        self.generations = generations
        self._agents: StampedMap[tuple[str, str], AgentSnapshot] = StampedMap(max_entries)
        self._keys: StampedMap[tuple[str, str], str | None] = StampedMap(max_entries)

    def agent(self, workspace_id: str, agent_id: str) -> AgentSnapshot | None:
        return self._agents.get((workspace_id, agent_id), self.generations.workspace(workspace_id))

    def keep_agent(self, agent: AgentSnapshot, workspace_id: str, stamp: Stamp) -> None:
        self._agents.put((workspace_id, agent.agent_id), agent, stamp)

    def key(self, workspace_id: str, provider: str) -> tuple[bool, str | None]:
        """(known, key): known is False when the key must be read from the database."""
        return self._keys.lookup((workspace_id, provider), self.generations.workspace(workspace_id))

    def keep_key(self, workspace_id: str, provider: str, key: str | None, stamp: Stamp) -> None:
        self._keys.put((workspace_id, provider), key, stamp)
