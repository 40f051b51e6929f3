"""The one rule every kept answer follows: serve it only while what it was built from is current.

Kept answers (session configs and the parts they are built from, the catalogue snapshot and its
variants, pages of agents) each remember a *stamp*: the counters below, read *before* the answer
was built. An answer whose stamp is no longer current is rebuilt. Reading the stamp first is what
keeps an answer built from rows read while a change was committing from passing as current.

The counters move with the change feed (after commit; other processes hear it through
LISTEN/NOTIFY) and with the flag gate:

- `catalogue`: tiers, voices, voice maps (topic "config:*");
- `workspace`: one per workspace: its agents, keys and settings (topic "config:<workspace>");
- `flags`: the flag gate's generation, moved once the evaluator holds new state (a reload from
  the database in embedded mode, a fetch of changed features by the Unleash SDK in scale mode);
- `epoch`: everything, when the change feed was lost and changes may have been missed ("resync").

docs/caches.md maps every kept answer to its stamp and the staleness bound of each mode.
"""

import threading
from typing import Generic, Protocol, TypeVar

from control_plane.changes import RESYNC

CATALOGUE_TOPIC = "config:*"
WORKSPACE_TOPIC_PREFIX = "config:"

Stamp = tuple[int, ...]
K = TypeVar("K")
V = TypeVar("V")


class FlagGeneration(Protocol):
    generation: int


class Generations:
    def __init__(self, flags: FlagGeneration) -> None:
        self._flags = flags
        self._epoch = 0
        self._catalogue = 0
        self._workspaces: dict[str, int] = {}
        self._lock = threading.Lock()

    def on_change(self, topic: str) -> None:
        with self._lock:
            if topic == RESYNC:
                self._epoch += 1
            elif topic == CATALOGUE_TOPIC:
                self._catalogue += 1
            elif topic.startswith(WORKSPACE_TOPIC_PREFIX):
                workspace_id = topic[len(WORKSPACE_TOPIC_PREFIX) :]
                self._workspaces[workspace_id] = self._workspaces.get(workspace_id, 0) + 1

    def catalogue(self) -> Stamp:
        """For what is built from the catalogue alone."""
        return (self._epoch, self._catalogue)

    def catalogue_after(self, topic: str) -> Stamp:
        """What `catalogue()` will read once `topic` has moved the counters."""
        if topic == RESYNC:
            return (self._epoch + 1, self._catalogue)
        if topic == CATALOGUE_TOPIC:
            return (self._epoch, self._catalogue + 1)
        return self.catalogue()

    def catalogue_and_flags(self) -> Stamp:
        """For the catalogue as a workspace sees it (availability comes from the flags)."""
        return (self._epoch, self._catalogue, self._flags.generation)

    def workspace(self, workspace_id: str) -> Stamp:
        """For what is built from one workspace's rows alone."""
        return (self._epoch, self._workspaces.get(workspace_id, 0))

    def workspace_and_catalogue(self, workspace_id: str) -> Stamp:
        return (self._epoch, self._catalogue, self._workspaces.get(workspace_id, 0))

    def everything(self, workspace_id: str) -> Stamp:
        """For a session config: catalogue, flags and the workspace."""
        return (
            self._epoch,
            self._catalogue,
            self._flags.generation,
            self._workspaces.get(workspace_id, 0),
        )


class StampedMap(Generic[K, V]):
    """Values kept with the stamp read before each was built; one is served only while its
    stamp is current. Bounded: a full map starts over (every value can be rebuilt)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[K, tuple[V, Stamp]] = {}
        self._lock = threading.Lock()

    def lookup(self, key: K, current: Stamp) -> tuple[bool, V | None]:
        """(found, value): found is False when nothing current is kept (the value may be None)."""
        kept = self._entries.get(key)
        if kept is not None and kept[1] == current:
            return True, kept[0]
        return False, None

    def get(self, key: K, current: Stamp) -> V | None:
        return self.lookup(key, current)[1]

    def last(self, key: K) -> V | None:
        """The last value kept, current or not (the last known answer while the database is
        away)."""
        kept = self._entries.get(key)
        return None if kept is None else kept[0]

    def put(self, key: K, value: V, stamp: Stamp) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (value, stamp)

    def __len__(self) -> int:
        return len(self._entries)
