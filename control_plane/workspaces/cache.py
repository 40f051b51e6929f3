"""Pages of a workspace's agents, kept as Served answers until that workspace changes.

Every agent write announces "config:<workspace>" (every process, through the change feed); a
catalogue edit, which can change a resolved voice, announces "config:*". A page built while such
a change was in flight is not kept: each workspace has a generation, and a page is stored only if
the generation it was built under is still current.
"""

import threading

from control_plane.changes import RESYNC
from control_plane.served import Served

PageKey = tuple[str, int, str | None]  # workspace, limit, cursor
EVERYTHING = {"config:*", RESYNC}
WORKSPACE_PREFIX = "config:"


class AgentPages:
    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._pages: dict[PageKey, Served] = {}
        self._generations: dict[str, int] = {}
        self._epoch = 0
        self._lock = threading.Lock()

    def generation(self, workspace_id: str) -> tuple[int, int]:
        return self._epoch, self._generations.get(workspace_id, 0)

    def get(self, key: PageKey) -> Served | None:
        return self._pages.get(key)

    def put(self, key: PageKey, served: Served, built_under: tuple[int, int]) -> None:
        with self._lock:
            if built_under != self.generation(key[0]):
                return  # a change arrived while it was built
            if len(self._pages) >= self.max_entries:
                self._pages.clear()
            self._pages[key] = served

    def invalidate(self, topic: str) -> None:
        with self._lock:
            if topic in EVERYTHING:
                self._epoch += 1
                self._pages.clear()
            elif topic.startswith(WORKSPACE_PREFIX):
                workspace_id = topic[len(WORKSPACE_PREFIX) :]
                self._generations[workspace_id] = self._generations.get(workspace_id, 0) + 1
                for key in [k for k in self._pages if k[0] == workspace_id]:
                    del self._pages[key]
