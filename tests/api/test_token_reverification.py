"""A busy token is re-verified ahead of its window's end, off the request path: while that
lookup runs, every hot read keeps being answered from the cache.

Before this, the moment a busy service token's 30-s window ended, every session-config in
flight went to the slow routes and the database at once: under `make bench`'s load a 2-s window
with p99 of 40-160 ms once every 30 s. The twin switches re-verifying ahead off and shows whole
flights of requests waiting on token lookups again.
"""

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from control_plane.auth import service as auth_service
from control_plane.auth.cache import TokenCache
from control_plane.auth.models import ApiToken
from control_plane.core import utcnow
from tests.api.test_session_config import grok_ready, make_agent, session_config  # noqa: F401
from tests.clock import Clock
from tests.conftest import Tokens

FLIGHT = 5
STEPS = 12  # a minute in 5-s steps: two 30-s windows


class HeldLookups:
    """Counts token lookups and holds each until released, like a database round trip that
    is still running while a flight of requests arrives."""

    def __init__(self, lookup: Callable[..., Any]) -> None:
        self.lookup = lookup
        self.calls = 0
        self.release = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        assert self.release.wait(10), "the lookup was never released"
        return self.lookup(*args, **kwargs)


def service_token_kept(client: TestClient, tokens: Tokens) -> tuple[str, TokenCache, Clock]:
    """An agent, and the service token verified and kept on a clock the test moves."""
    agent = make_agent(client, tokens)
    cache: TokenCache = client.app.state.token_cache  # type: ignore[attr-defined]
    cache.clock = clock = Clock(time.monotonic())
    cache.clear()
    clock.now += 0.001  # after the clear, so this lookup is kept
    assert session_config(client, tokens, agent).status_code == 200
    return agent, cache, clock


def answered_while_lookups_held(
    client: TestClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch, patience: float
) -> tuple[list[int], int]:
    """A service token in steady use for a minute: every 5 s a flight of concurrent
    session-configs while token lookups are held. How many of each flight were answered before
    the lookups were released (waiting up to `patience` s), and how many lookups there were."""
    agent, _, clock = service_token_kept(client, tokens)
    held = HeldLookups(auth_service.principal_for_token)
    monkeypatch.setattr(auth_service, "principal_for_token", held)
    answered = []
    try:
        for _ in range(STEPS):
            clock.now += 5
            held.release.clear()
            statuses: list[int] = []

            def one_request(statuses: list[int] = statuses) -> None:
                statuses.append(session_config(client, tokens, agent).status_code)

            flight = [threading.Thread(target=one_request) for _ in range(FLIGHT)]
            for request in flight:
                request.start()
            deadline = time.monotonic() + patience
            while len(statuses) < FLIGHT and time.monotonic() < deadline:
                time.sleep(0.002)
            answered.append(len(statuses))
            held.release.set()
            for request in flight:
                request.join(10)
            assert statuses == [200] * FLIGHT
    finally:
        held.release.set()
    return answered, held.calls


@pytest.mark.usefixtures("grok_ready")
def test_a_busy_token_is_reverified_while_every_request_is_answered(
    client: TestClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    answered, lookups = answered_while_lookups_held(client, tokens, monkeypatch, patience=10)
    assert answered == [FLIGHT] * STEPS, "no request waited for a token lookup"
    assert 3 <= lookups <= STEPS, f"the token was re-verified as the minute went on: {lookups}"


@pytest.mark.usefixtures("grok_ready")
def test_twin_without_reverifying_ahead_whole_flights_wait_on_lookups(
    client: TestClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TokenCache, "claim_reverification", lambda *_: False)  # guard off
    answered, lookups = answered_while_lookups_held(client, tokens, monkeypatch, patience=1)
    assert 0 in answered, f"a flight met an expired token: {answered}"
    assert lookups >= FLIGHT, "each request of that flight looked the token up"


@pytest.mark.usefixtures("grok_ready")
def test_a_token_revoked_behind_the_feed_is_dropped_at_its_reverification(
    client: TestClient, tokens: Tokens
) -> None:
    """Re-verifying ahead keeps the rule: a token that no longer verifies is not kept."""
    agent, cache, clock = service_token_kept(client, tokens)
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with Session(engine) as session:  # revoked without the change feed hearing of it
        token_hash = auth_service.hash_token(tokens.service)
        row = session.exec(select(ApiToken).where(col(ApiToken.token_hash) == token_hash)).one()
        row.revoked_at = utcnow()
        session.add(row)
        session.commit()
    assert session_config(client, tokens, agent).status_code == 200, "inside the first half"
    clock.now += 16
    assert session_config(client, tokens, agent).status_code == 200, "due: looked up meanwhile"
    deadline = time.monotonic() + 10
    while cache.fresh(token_hash) is not None and time.monotonic() < deadline:
        time.sleep(0.005)
    refused = session_config(client, tokens, agent)
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_token"
