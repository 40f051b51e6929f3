"""Pages of a workspace's agents, kept as Served answers while that workspace and the catalogue
(which resolves each agent's voice) are what they were built from (their stamp, `kept.py`)."""

from control_plane.kept import Generations, Stamp, StampedMap
from control_plane.served import Served

PageKey = tuple[str, int, str | None]  # workspace, limit, cursor


class AgentPages:
    def __init__(self, generations: Generations, max_entries: int = 10_000) -> None:
        self.generations = generations
        self._pages: StampedMap[PageKey, Served] = StampedMap(max_entries)

    def stamp(self, workspace_id: str) -> Stamp:
        """Read before building a page of this workspace."""
        return self.generations.workspace_and_catalogue(workspace_id)

    def get(self, key: PageKey) -> Served | None:
        return self._pages.get(key, self.stamp(key[0]))

    def put(self, key: PageKey, served: Served, stamp: Stamp) -> None:
        self._pages.put(key, served, stamp)
