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
