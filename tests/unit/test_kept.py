"""The stamp rule of kept answers (control_plane/kept.py): read before building, served while
current. Each case shows a change landing while an answer is built, and the answer not kept."""

from typing import Any

from control_plane.catalogue.snapshot import CatalogueData, CatalogueSnapshot
from control_plane.changes import RESYNC
from control_plane.kept import Generations, StampedMap
from control_plane.sessions.cache import ConfigCache, ConfigParts
from control_plane.sessions.models import ResolvedSessionConfig
from control_plane.workspaces.models import AgentConfig
from control_plane.workspaces.service import AgentSnapshot


class Flags:
    generation = 0


def config(name: str) -> ResolvedSessionConfig:
    return ResolvedSessionConfig.model_construct(agent_name=name, credentials=None)


def test_a_config_resolved_while_its_workspace_changed_is_not_served(monkeypatch: Any) -> None:
    monkeypatch.setattr("control_plane.sessions.cache.serialize", lambda c: c.agent_name.encode())
    flags = Flags()
    generations = Generations(flags)
    cache = ConfigCache(generations, max_entries=10)
    key = ("acme", "agt_1", "key", "phone")
    stamp = cache.stamp(key)
    generations.on_change("config:acme")  # committed while the old rows were being resolved
    cache.put(key, config("old"), stamp)
    assert cache.get(key) is None
    assert cache.last_known(key) is not None  # still there for a database outage
    cache.put(key, config("new"), cache.stamp(key))
    assert cache.get(key) is not None
    generations.on_change("config:globex")
    assert cache.get(key) is not None  # another workspace's change leaves it alone
    for move in (
        lambda: generations.on_change("config:*"),
        lambda: setattr(flags, "generation", flags.generation + 1),
        lambda: generations.on_change(RESYNC),
    ):
        cache.put(key, config("new"), cache.stamp(key))
        move()
        assert cache.get(key) is None


def test_an_unchanged_rebuild_keeps_its_etag(monkeypatch: Any) -> None:
    monkeypatch.setattr("control_plane.sessions.cache.serialize", lambda c: c.agent_name.encode())
    generations = Generations(Flags())
    cache = ConfigCache(generations, max_entries=10)
    key = ("acme", "agt_1", "key", "phone")
    first = cache.put(key, config("same"), cache.stamp(key))
    generations.on_change("config:*")
    again = cache.put(key, config("same"), cache.stamp(key))
    assert again.served is first.served
    other = cache.put(key, config("other"), cache.stamp(key))
    assert other.served.etag != first.served.etag


def test_parts_follow_their_workspace_only() -> None:
    flags = Flags()
    generations = Generations(flags)
    parts = ConfigParts(generations, max_entries=10)
    agent = AgentSnapshot("agt_1", AgentConfig(name="Ava", pricing_tier="premium"), 1, 1)
    stamp = generations.workspace("acme")
    generations.on_change("config:acme")
    parts.keep_agent(agent, "acme", stamp)
    parts.keep_key("acme", "xai", "secret", stamp)
    assert parts.agent("acme", "agt_1") is None and parts.key("acme", "xai") == (False, None)
    parts.keep_agent(agent, "acme", generations.workspace("acme"))
    parts.keep_key("acme", "xai", None, generations.workspace("acme"))
    # Catalogue and flag changes rebuild configs from these parts: they stay.
    generations.on_change("config:*")
    flags.generation += 1
    assert parts.agent("acme", "agt_1") is agent
    assert parts.key("acme", "xai") == (True, None)  # "no key" is known too
    generations.on_change(RESYNC)
    assert parts.agent("acme", "agt_1") is None


def test_a_catalogue_loaded_while_an_edit_committed_is_loaded_again(monkeypatch: Any) -> None:
    generations = Generations(Flags())
    snapshot = CatalogueSnapshot(generations)
    loads: list[CatalogueData] = []

    def load(self: CatalogueSnapshot, session: object) -> CatalogueData:
        data = CatalogueData(tiers={}, voices={}, voice_maps={})
        if not loads:
            generations.on_change("config:*")  # the edit commits during the first load
        loads.append(data)
        return data

    monkeypatch.setattr(CatalogueSnapshot, "_load", load)
    first = snapshot.get(session=None)  # type: ignore[arg-type]
    assert first is loads[0] and snapshot.current is None
    second = snapshot.get(session=None)  # type: ignore[arg-type]
    assert second is loads[1] and snapshot.current is second


def test_a_config_whose_basis_holds_is_stamped_current_not_rebuilt(monkeypatch: Any) -> None:
    from control_plane.sessions.cache import ConfigBasis

    monkeypatch.setattr("control_plane.sessions.cache.serialize", lambda c: c.agent_name.encode())
    flags = Flags()
    generations = Generations(flags)
    holds = {"answer": True}
    asked: list[ConfigBasis] = []

    def revalidate(basis: ConfigBasis) -> bool:
        asked.append(basis)
        return holds["answer"]

    cache = ConfigCache(generations, max_entries=10, revalidate=revalidate)
    key = ("acme", "agt_1", "key", "phone")
    basis = ConfigBasis("acme", "grok-realtime", 1, 1, 1, None)
    cache.put(key, config("kept"), cache.stamp(key), basis)
    generations.on_change("config:*")  # another tier edited
    assert cache.get(key) is not None and asked == [basis]
    assert cache.get(key) is not None and len(asked) == 1  # stamped current: not asked again
    flags.generation += 1
    holds["answer"] = False  # this time the basis changed
    assert cache.get(key) is None
    generations.on_change("config:acme")  # a workspace change is never revalidated
    holds["answer"] = True
    assert cache.get(key) is None


def test_a_stamped_map_serves_a_value_only_under_the_stamp_it_was_built_with() -> None:
    kept: StampedMap[str, str | None] = StampedMap(max_entries=2)
    kept.put("acme", None, (0, 1))  # "no key" is a value worth keeping
    assert kept.lookup("acme", (0, 1)) == (True, None)
    assert kept.lookup("acme", (0, 2)) == (False, None)
    assert kept.lookup("globex", (0, 1)) == (False, None)
    kept.put("globex", "k", (0, 1))
    assert kept.get("globex", (0, 2)) is None and kept.last("globex") == "k"
    kept.put("initech", "i", (0, 1))  # full: starts over rather than growing
    assert len(kept) == 1 and kept.last("acme") is None


class CatalogueLoads:
    """`CatalogueSnapshot._load` for these tests: a new catalogue each time, and what a reader
    would have seen at the moment the load was made."""

    def __init__(self, snapshot: CatalogueSnapshot, fail: bool = False) -> None:
        self.snapshot, self.fail = snapshot, fail
        self.loaded: list[CatalogueData] = []
        self.seen_while_loading: list[CatalogueData | None] = []

    def __call__(self, session: object) -> CatalogueData:
        self.seen_while_loading.append(self.snapshot.current)
        if self.fail and self.loaded:  # the first load, by a read, goes through
            raise OSError("the database is away")
        self.loaded.append(CatalogueData(tiers={}, voices={}, voice_maps={}))
        return self.loaded[-1]


def catalogue_through_an_edit(monkeypatch: Any, engine: Any, fail: bool = False) -> dict[str, Any]:
    """What a reader sees of the catalogue: first; while a new one is loaded ahead; as the
    counter moves; right after an edit (`config:*`), then a resync, then a workspace's change."""
    generations = Generations(Flags())
    snapshot = CatalogueSnapshot(generations, engine)
    loads = CatalogueLoads(snapshot, fail)
    monkeypatch.setattr(snapshot, "_load", loads)
    seen: dict[str, Any] = {"first": snapshot.get(session=None)}  # type: ignore[arg-type]
    moving: list[CatalogueData | None] = []
    move = generations.on_change

    def counter_moves(topic: str) -> None:
        moving.append(snapshot.current)  # the new one is kept by now, not yet current
        move(topic)

    monkeypatch.setattr(generations, "on_change", counter_moves)
    for topic in ("config:*", RESYNC, "config:acme"):
        snapshot.on_change(topic)
        seen[f"after {topic}"] = snapshot.current
    seen["while loading"] = loads.seen_while_loading[1:]
    seen["as the counter moves"] = moving
    return seen


def test_an_edit_swaps_the_catalogue_in_and_a_reader_never_finds_none(monkeypatch: Any) -> None:
    from sqlalchemy import create_engine

    seen = catalogue_through_an_edit(monkeypatch, create_engine("sqlite://"))
    first, edited, resynced = seen["first"], seen["after config:*"], seen["after resync"]
    assert edited is not None and edited is not first  # the new one once the counter moved
    assert resynced is not None and resynced is not edited
    assert seen["after config:acme"] is resynced  # a workspace's change leaves it alone
    # The old one until the counter moves, whether the reader looks during the load or after.
    assert seen["while loading"] == [first, edited]
    assert seen["as the counter moves"] == [first, edited, resynced]


def test_twin_loaded_on_the_next_read_an_edit_leaves_readers_without_a_catalogue(
    monkeypatch: Any,
) -> None:
    seen = catalogue_through_an_edit(monkeypatch, engine=None)
    assert seen["first"] is not None
    assert seen["after config:*"] is None and seen["after resync"] is None  # reads go to routes


def test_a_catalogue_that_cannot_be_loaded_ahead_is_loaded_by_the_next_read(
    monkeypatch: Any,
) -> None:
    from sqlalchemy import create_engine

    seen = catalogue_through_an_edit(monkeypatch, create_engine("sqlite://"), fail=True)
    assert seen["after config:*"] is None  # the counter moved all the same: nothing stale
    assert seen["after resync"] is None
