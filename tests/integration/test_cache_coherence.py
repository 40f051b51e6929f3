"""Every kept answer tells the truth: a model-based test over the three ways Switchboard runs.

The rules are the writes (catalogue, voice map, flag stage, percentage, kill and resume, cohort
membership, agents, keys, workspace settings). After each one, the invariant reads every read
path as each kind of caller (anonymous, admin with `?workspace_id=`, a workspace's token, the
call backend's service token) and compares what the deployment answers with an oracle: a
Switchboard started fresh on the same database, in embedded mode, whose every answer is built
from the rows with nothing kept. The database is the truth; a mode only decides how soon each
process shows it (docs/caches.md):

- embedded, SQLite, one process: at the next read;
- two `switchboard serve` processes on PostgreSQL, writes on one, reads on both: within the
  LISTEN/NOTIFY bound;
- scale mode against the real unleash-server: within the SDK's refresh interval and a margin.

The twins switch one invalidation hook off each and show the invariant failing: proof that the
model test sees a stale kept answer.
"""

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from pydantic import SecretStr
from sqlmodel import Session, select

from control_plane.app import create_app
from control_plane.auth import service as auth_service
from control_plane.db import make_engine
from control_plane.rollout.engine import UnleashAdmin
from control_plane.rollout.models import Flag
from control_plane.settings import Settings
from tests.conftest import UnleashServer, auth
from tests.fakes.server import free_port

FLAG = "grok-realtime-tier"
TIERS = ("premium", "budget", "grok-realtime")
SERVE = str(Path(sys.executable).parent / "switchboard")
# Examples per mode: small enough for `make test`; SWITCHBOARD_COHERENCE_EXAMPLES raises it
# (`make soak` runs it with more).
EXAMPLES = int(os.environ.get("SWITCHBOARD_COHERENCE_EXAMPLES", "4"))
STEPS = int(os.environ.get("SWITCHBOARD_COHERENCE_STEPS", "12"))

Client = Any  # httpx.Client or Starlette's TestClient: the same calls


@dataclass
class Deployment:
    """Where the machine writes, where it reads, its oracle and how stale a read may be."""

    writer: Client
    readers: list[Client]
    oracle: Callable[[], AbstractContextManager[Client]]
    bound_seconds: float
    admin: str
    service: str
    database_url: str
    settings: Settings
    notes: list[str] = field(default_factory=list)


def issue_token(database_url: str, settings: Settings, name: str, scopes: list[str]) -> str:
    engine = make_engine(settings.model_copy(update={"database_url": database_url}))
    with Session(engine) as session:
        token = auth_service.create_token(session, name=name, scopes=scopes)[1]
        session.commit()
    engine.dispose()
    return token


# --- the read paths --------------------------------------------------------------------------


def reads(workspaces: dict[str, str], agents: dict[str, list[str]], deploy: Deployment) -> list:
    """(label, token or None, path) of every read path, for each workspace and caller."""
    paths: list[tuple[str, str | None, str]] = [
        ("anonymous tiers", None, "/api/v1/tiers"),
        ("voices", None, "/api/v1/voices"),
        ("voice map", None, "/api/v1/voice-maps/grok"),
        ("client features", deploy.admin, "/api/client/features"),
    ]
    paths += [(f"anonymous tier {t}", None, f"/api/v1/tiers/{t}") for t in TIERS]
    for workspace_id, token in workspaces.items():
        query = f"?workspace_id={workspace_id}"
        paths += [
            ("admin tiers", deploy.admin, f"/api/v1/tiers{query}"),
            ("admin grok tier", deploy.admin, f"/api/v1/tiers/grok-realtime{query}"),
            ("workspace tiers", token, "/api/v1/tiers"),
            ("workspace grok tier", token, "/api/v1/tiers/grok-realtime"),
            ("workspace premium tier", token, f"/api/v1/tiers/premium{query}"),
            ("decision", token, f"/api/v1/flags/{FLAG}/decision{query}"),
            ("agents", token, f"/api/v1/workspaces/{workspace_id}/agents"),
            ("agents page 1", token, f"/api/v1/workspaces/{workspace_id}/agents?limit=1"),
            ("settings", token, f"/api/v1/workspaces/{workspace_id}/settings"),
        ]
        for agent_id in agents[workspace_id]:
            base = f"/api/v1/workspaces/{workspace_id}/agents/{agent_id}/session-config"
            paths += [
                ("session-config", deploy.service, base),
                (
                    "session-config browser",
                    deploy.service,
                    f"{base}?credentials=none&channel=browser",
                ),
            ]
    return paths


def answer(client: Client, token: str | None, path: str) -> tuple[int, Any]:
    response = client.get(path, headers=auth(token) if token else {})
    body = response.json()
    if isinstance(body, dict):
        body.pop("mode", None)
    return response.status_code, body


def snapshot(client: Client, paths: list) -> dict[tuple[str, str], tuple[int, Any]]:
    return {(label, path): answer(client, token, path) for label, token, path in paths}


def issuance(client: Client, service: str, workspace_id: str, agent_id: str) -> object:
    """What issuing a call answers: "issued" (then released) or the refusal's code."""
    response = client.post(
        f"/api/v1/workspaces/{workspace_id}/agents/{agent_id}/calls",
        json={"channel": "api"},
        headers=auth(service),
    )
    if response.status_code == 201:
        call_id = response.json()["call_id"]
        released = client.post(
            f"/api/v1/calls/{call_id}/release", json={"reason": "coherence"}, headers=auth(service)
        )
        assert released.status_code == 200, released.text
        return "issued"
    return response.json().get("code")


def expected_issuance(config: tuple[int, Any]) -> object:
    status, body = config
    return "issued" if status == 200 else body.get("code")


def where_they_differ(kept: Any, truth: Any, at: str = "") -> list[str]:
    """The paths inside two answers where they differ, each with both values."""
    if isinstance(kept, dict) and isinstance(truth, dict):
        return [
            found
            for name in sorted(set(kept) | set(truth))
            for found in where_they_differ(kept.get(name), truth.get(name), f"{at}.{name}")
        ]
    if (
        isinstance(kept, list | tuple)
        and isinstance(truth, list | tuple)
        and len(kept) == len(truth)
    ):
        return [
            found
            for index, (a, b) in enumerate(zip(kept, truth, strict=True))
            for found in where_they_differ(a, b, f"{at}[{index}]")
        ]
    return [] if kept == truth else [f"{at or '.'}: kept {kept!r:.80} / truth {truth!r:.80}"]


def differences(seen: dict, truth: dict) -> list[str]:
    return [
        f"{label} {path} " + "; ".join(where_they_differ(seen.get((label, path)), answer)[:3])
        for (label, path), answer in truth.items()
        if seen.get((label, path)) != answer
    ]


# --- the machine -----------------------------------------------------------------------------


class Coherence(RuleBasedStateMachine):
    deploy: Deployment

    def __init__(self) -> None:
        super().__init__()
        self.workspaces: dict[str, str] = {}
        self.agents: dict[str, list[str]] = {}
        self.step = 0

    def write(self, method: str, path: str, body: Any = None, *, refusable: bool = False) -> Any:
        """A write as the admin; `refusable`: one the flags may refuse (403 tier_not_enabled, …),
        which then changes nothing and answers None."""
        response = self.deploy.writer.request(
            method, path, json=body, headers=auth(self.deploy.admin)
        )
        if refusable and response.status_code in (403, 409):
            return None
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    @initialize()
    def two_workspaces(self) -> None:
        for index in range(2):
            workspace_id = f"w{uuid.uuid4().hex[:8]}{index}"
            self.write("POST", "/api/v1/workspaces", {"id": workspace_id, "name": workspace_id})
            self.workspaces[workspace_id] = issue_token(
                self.deploy.database_url,
                self.deploy.settings,
                workspace_id,
                [f"workspace:{workspace_id}"],
            )
            self.agents[workspace_id] = []
            self.create_agent(index, "premium", "marin")
            self.create_agent(index, "grok-realtime", "marin")

    def workspace(self, index: int) -> str:
        return list(self.workspaces)[index % len(self.workspaces)]

    # --- catalogue
    @rule(tier=st.sampled_from(TIERS), name=st.sampled_from(["Alpha", "Beta", "Gamma"]))
    def edit_tier(self, tier: str, name: str) -> None:
        self.write("PATCH", f"/api/v1/tiers/{tier}", {"name": f"{tier} {name}"})

    @rule(default=st.sampled_from(["Ara", "Rex", "Eve"]), marin=st.sampled_from(["Sal", "Leo"]))
    def edit_voice_map(self, default: str, marin: str) -> None:
        self.write(
            "PUT",
            "/api/v1/voice-maps/grok",
            {"default_voice": default, "entries": {"marin": marin}},
        )

    # --- flags and cohorts
    @rule(stage=st.sampled_from(["off", "internal", "beta", "ga"]))
    def stage(self, stage: str) -> None:
        self.write("PUT", f"/api/v1/flags/{FLAG}/stage", {"stage": stage}, refusable=True)

    @rule(percentage=st.sampled_from([0, 50, 100]))
    def percentage(self, percentage: int) -> None:
        self.write(
            "PUT", f"/api/v1/flags/{FLAG}/rollout", {"percentage": percentage}, refusable=True
        )

    @rule(kill=st.booleans())
    def kill_or_resume(self, kill: bool) -> None:
        self.write("POST", f"/api/v1/flags/{FLAG}/{'kill' if kill else 'resume'}", refusable=True)

    @rule(cohort=st.sampled_from(["internal", "beta-1"]), members=st.sets(st.integers(0, 1)))
    def cohort(self, cohort: str, members: set[int]) -> None:
        chosen = sorted(self.workspace(i) for i in members)
        self.write("PUT", f"/api/v1/cohorts/{cohort}", {"members": chosen})

    # --- agents, keys, settings
    @rule(
        index=st.integers(0, 1),
        tier=st.sampled_from(TIERS),
        voice=st.sampled_from(["marin", "alloy"]),
    )
    def create_agent(self, index: int, tier: str, voice: str) -> None:
        workspace_id = self.workspace(index)
        if len(self.agents[workspace_id]) >= 3:
            return
        body = {"name": "Agent", "pricing_tier": tier, "voice": voice}
        path = f"/api/v1/workspaces/{workspace_id}/agents"
        created = self.write("POST", path, body, refusable=True)
        if created is not None:
            self.agents[workspace_id].append(created["id"])

    @rule(index=st.integers(0, 1), tier=st.sampled_from(TIERS), name=st.sampled_from(["Ava", "Bo"]))
    def edit_agent(self, index: int, tier: str, name: str) -> None:
        workspace_id = self.workspace(index)
        if self.agents[workspace_id]:
            agent_id = self.agents[workspace_id][0]
            path = f"/api/v1/workspaces/{workspace_id}/agents/{agent_id}"
            self.write("PATCH", path, {"name": name, "pricing_tier": tier}, refusable=True)

    @rule(index=st.integers(0, 1))
    def delete_agent(self, index: int) -> None:
        workspace_id = self.workspace(index)
        if self.agents[workspace_id]:
            agent_id = self.agents[workspace_id].pop()
            self.write("DELETE", f"/api/v1/workspaces/{workspace_id}/agents/{agent_id}")

    @rule(index=st.integers(0, 1), key=st.sampled_from([None, "a", "b"]))
    def set_key(self, index: int, key: str | None) -> None:
        workspace_id = self.workspace(index)
        value = None if key is None else "xai-" + key * 8 + "Coherence0Test1Key2x"
        self.write(
            "PUT", f"/api/v1/workspaces/{workspace_id}/settings/api-keys", {"xai_api_key": value}
        )

    @rule(index=st.integers(0, 1), keep=st.booleans())
    def keep_transcripts(self, index: int, keep: bool) -> None:
        workspace_id = self.workspace(index)
        path = f"/api/v1/workspaces/{workspace_id}/settings"
        self.write("PATCH", path, {"keep_transcripts": keep})

    # --- the invariant
    @invariant()
    def every_read_agrees_with_the_database(self) -> None:
        if not self.workspaces:
            return
        self.step += 1
        paths = reads(self.workspaces, self.agents, self.deploy)
        # Read first: answers built right after a write are the ones a missed change spoils.
        first = [snapshot(reader, paths) for reader in self.deploy.readers]
        with self.deploy.oracle() as oracle:
            truth = snapshot(oracle, paths)
        deadline = time.monotonic() + self.deploy.bound_seconds
        for reader, seen in zip(self.deploy.readers, first, strict=True):
            wrong = differences(seen, truth)
            while wrong and time.monotonic() < deadline:
                time.sleep(0.1)
                wrong = differences(snapshot(reader, paths), truth)
            if wrong:
                self.fail(f"step {self.step}: {len(wrong)} stale answers:\n" + "\n".join(wrong[:8]))
        for workspace_id, agent_ids in self.agents.items():
            for agent_id in agent_ids:
                base = f"/api/v1/workspaces/{workspace_id}/agents/{agent_id}/session-config"
                issued = issuance(self.deploy.writer, self.deploy.service, workspace_id, agent_id)
                expected = expected_issuance(truth[("session-config", base)])
                if issued != expected:
                    self.fail(
                        f"step {self.step}: call issuance answered {issued!r}, not {expected!r}"
                    )

    def fail(self, message: str) -> None:
        """Note what was seen (a twin checks the note: Hypothesis may replay the example on a
        process whose kept answers the first run already spoiled), then fail."""
        self.deploy.notes.append(message)
        raise AssertionError(message)


def run_machine(
    deploy: Deployment, examples: int = EXAMPLES, steps: int = STEPS, **kw: Any
) -> None:
    machine = type("CoherenceIn", (Coherence,), {"deploy": deploy})
    # No shrinking: the deployment's database carries over from one example to the next, so a
    # replay never meets the state the failure did; shrinking would only bury the first failure
    # under a "flaky" report (seen under load). The failing step's message says what went wrong.
    kw.setdefault("phases", [Phase.explicit, Phase.generate])
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
            **kw,
        ),
    )


# --- the three modes -------------------------------------------------------------------------


def fresh(settings: Settings) -> Callable[[], AbstractContextManager[Client]]:
    """The oracle: a Switchboard started now on the same database, embedded, nothing kept."""
    embedded = settings.model_copy(update={"unleash_url": None, "maintenance_interval_seconds": 0})

    @contextmanager
    def started() -> Iterator[Client]:
        with TestClient(create_app(embedded)) as client:
            yield client

    return started


def deployment(
    settings: Settings, writer: Client, readers: list[Client], bound_seconds: float
) -> Deployment:
    """Writes on `writer`, reads on `readers`, an admin and a service token of their own."""
    return Deployment(
        writer=writer,
        readers=readers,
        oracle=fresh(settings),
        bound_seconds=bound_seconds,
        admin=issue_token(settings.database_url, settings, "admin", ["admin"]),
        service=issue_token(settings.database_url, settings, "service", ["service"]),
        database_url=settings.database_url,
        settings=settings,
    )


@contextmanager
def in_process(settings: Settings, bound_seconds: float = 0.0) -> Iterator[Deployment]:
    with TestClient(create_app(settings)) as client:
        yield deployment(settings, client, [client], bound_seconds)


@contextmanager
def serve_process(settings: Settings) -> Iterator[httpx.Client]:
    """`switchboard serve` in a process of its own on the same database and master key."""
    port = free_port()
    env = {
        **os.environ,
        "SWITCHBOARD_ENVIRONMENT": "development",
        "SWITCHBOARD_DATABASE_URL": settings.database_url,
        "SWITCHBOARD_MASTER_KEY_FILE": str(settings.master_key_file),
    }
    process = subprocess.Popen(
        [SERVE, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            try:
                if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "switchboard serve did not come up"
            time.sleep(0.1)
        with httpx.Client(base_url=base_url, timeout=10) as client:
            yield client
    finally:
        process.terminate()
        process.wait(timeout=15)


# LISTEN/NOTIFY reaches another process in milliseconds; a second covers a loaded CI host.
REPLICA_BOUND_SECONDS = 2.0
# The SDK polls every second here; it and the server's own client-API cache take a few more.
SCALE_BOUND_SECONDS = 8.0
# The scale-mode twin's poll. At 1 s the twin once found no stale answer in a whole suite run
# (two workers on two cores): the SDK had the change before the reads right after it. At 4 s
# those reads run first; the SDK still has it well within the bound (the machine with the hook
# on and this poll agrees within it).
TWIN_POLL_SECONDS = 4


@contextmanager
def replicas(settings: Settings, writer: Client | None = None) -> Iterator[Deployment]:
    """Two serve processes on one PostgreSQL database: writes on the first (or on `writer`),
    reads on both."""
    create_app(settings)  # makes the master key file both processes share
    with serve_process(settings) as first, serve_process(settings) as second:
        writes = writer if writer is not None else first
        yield deployment(settings, writes, [writes, second], REPLICA_BOUND_SECONDS)


def scale(settings: Settings, unleash: UnleashServer, poll_seconds: int = 1) -> Settings:
    """Scale mode on this database, with the server holding this database's flags to start."""
    scaled = settings.model_copy(
        update={
            "unleash_url": unleash.url,
            "unleash_client_token": SecretStr(unleash.client_token),
            "unleash_admin_token": SecretStr(unleash.admin_token),
            "unleash_refresh_interval_seconds": poll_seconds,
        }
    )
    admin = UnleashAdmin(scaled)
    engine = make_engine(scaled)
    with Session(engine) as session:
        for flag in session.exec(select(Flag)):
            admin.push(flag.definition)  # earlier tests left their own states on the server
    engine.dispose()
    admin.close()
    return scaled


def stale_answers_seen(deploy: Deployment, run: Callable[[], None]) -> str:
    """Run the machine expecting the invariant to fail; what it saw first."""
    # The assertion itself, or Hypothesis failing its replay on a process already spoiled.
    with pytest.raises((AssertionError, HypothesisException, BaseExceptionGroup)):
        run()
    assert deploy.notes, "the machine failed, but not on a stale answer"
    return deploy.notes[0]


# --- embedded ---------------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_embedded_every_kept_answer_agrees_at_the_next_read(settings: Settings) -> None:
    with in_process(settings) as deploy:
        run_machine(deploy)


def catalogue_edits_unheard(monkeypatch: pytest.MonkeyPatch) -> None:
    from control_plane import kept

    monkeypatch.setattr(kept, "CATALOGUE_TOPIC", "no-such-topic")


def workspace_changes_unheard(monkeypatch: pytest.MonkeyPatch) -> None:
    from control_plane import kept

    monkeypatch.setattr(kept, "WORKSPACE_TOPIC_PREFIX", "no-such-topic:")


def flag_reloads_unannounced(monkeypatch: pytest.MonkeyPatch) -> None:
    from control_plane.rollout.gate import FlagGate

    reload = FlagGate.reload

    def reload_keeping_the_generation(self: FlagGate) -> None:
        generation = self.generation
        reload(self)
        self.generation = generation

    monkeypatch.setattr(FlagGate, "reload", reload_keeping_the_generation)


def revalidation_blind(monkeypatch: pytest.MonkeyPatch) -> None:
    """A config whose basis changed is taken as still holding (only the catalogue or flag
    counters moved, so the cache asks the resolver instead of rebuilding)."""
    from control_plane.sessions.service import Resolver

    monkeypatch.setattr(Resolver, "still_holds", lambda self, basis: True)


@pytest.mark.parametrize(
    "switch_off",
    [
        catalogue_edits_unheard,
        workspace_changes_unheard,
        flag_reloads_unannounced,
        revalidation_blind,
    ],
    ids=lambda hook: hook.__name__,
)
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_twin_embedded_with_one_hook_off_the_model_sees_stale_answers(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, switch_off: Callable[..., None]
) -> None:
    switch_off(monkeypatch)
    with in_process(settings) as deploy:
        seen = stale_answers_seen(
            deploy, lambda: run_machine(deploy, examples=10, phases=[Phase.generate])
        )
        assert "stale answers" in seen or "call issuance" in seen


# --- PostgreSQL replicas ----------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_replicas_on_postgresql_agree_within_the_notify_bound(settings: Settings) -> None:
    with replicas(settings) as deploy:
        run_machine(deploy)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_twin_replicas_without_notify_the_other_process_keeps_stale_answers(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer commits without NOTIFY (its own process still hears its changes): the
    replica's kept answers are never told."""
    from control_plane.changes import ChangeFeed

    publish = ChangeFeed.publish

    def publish_unannounced(self: ChangeFeed, session: Any, topic: str) -> None:
        self._notify = False
        publish(self, session, topic)

    monkeypatch.setattr(ChangeFeed, "publish", publish_unannounced)
    with TestClient(create_app(settings)) as writer, replicas(settings, writer) as deploy:
        seen = stale_answers_seen(
            deploy, lambda: run_machine(deploy, examples=6, phases=[Phase.generate])
        )
        assert "stale answers" in seen or "call issuance" in seen


# --- scale mode on the real unleash-server ----------------------------------------------------


@pytest.mark.unleash
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_scale_mode_agrees_within_the_refresh_interval(
    settings: Settings, unleash_server: UnleashServer
) -> None:
    with in_process(scale(settings, unleash_server), SCALE_BOUND_SECONDS) as deploy:
        run_machine(deploy, examples=2 * EXAMPLES)  # flag changes show up less often here


@pytest.mark.unleash
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_twin_scale_mode_without_the_sdk_fetch_hook_keeps_stale_answers(
    settings: Settings, unleash_server: UnleashServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flag change reaches the SDK a poll after the database reload announced it: without the
    fetch hook, answers built in between are kept (the single-tier report of issue 34)."""
    from control_plane.rollout.gate import FlagGate

    monkeypatch.setattr(FlagGate, "_evaluator_moved", lambda self: None)
    scaled = scale(settings, unleash_server, TWIN_POLL_SECONDS)
    with in_process(scaled, SCALE_BOUND_SECONDS) as deploy:
        seen = stale_answers_seen(
            deploy, lambda: run_machine(deploy, examples=8, phases=[Phase.generate])
        )
        assert "stale answers" in seen or "call issuance" in seen
