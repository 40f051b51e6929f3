"""Pages of a workspace's agents, kept as Served answers while that workspace and the catalogue
(which resolves each agent's voice) are what they were built from (their stamp, `kept.py`)."""

import threading

from control_plane.kept import Generations, Stamp
from control_plane.served import Served

PageKey = tuple[str, int, str | None]  # workspace, limit, cursor


class AgentPages:
    def __init__(self, generations: Generations, max_entries: int = 10_000) -> None:
        self.generations = generations
        self.max_entries = max_entries
        self._pages: dict[PageKey, tuple[Served, Stamp]] = {}
        self._lock = threading.Lock()

    def stamp(self, workspace_id: str) -> Stamp:
        """Read before building a page of this workspace."""
        return self.generations.workspace_and_catalogue(workspace_id)

    def get(self, key: PageKey) -> Served | None:
        kept = self._pages.get(key)
        if kept is not None and kept[1] == self.stamp(key[0]):
            return kept[0]
        return None

    def put(self, key: PageKey, served: Served, stamp: Stamp) -> None:
        with self._lock:
            if len(self._pages) >= self.max_entries:
                self._pages.clear()
            self._pages[key] = (served, stamp)
