"""The token cache's window: trusted, due for re-verification (claimed once), expired."""

from control_plane.auth.cache import TokenCache
from control_plane.auth.principal import Principal
from tests.clock import Clock

SERVICE = Principal(name="service", scopes=frozenset({"service"}), token_id=1)


def cache_with_entry() -> tuple[TokenCache, Clock]:
    clock = Clock(1000.0)
    cache = TokenCache(fresh_seconds=30.0, clock=clock)
    cache.put("h", SERVICE, clock.now)
    return cache, clock


def test_first_half_of_the_window_is_trusted_and_not_due() -> None:
    cache, clock = cache_with_entry()
    clock.now += 14.9
    assert cache.fresh("h") is SERVICE
    assert not cache.claim_reverification("h")


def test_a_due_entry_is_claimed_once_and_trusted_meanwhile() -> None:
    cache, clock = cache_with_entry()
    clock.now += 16
    assert cache.claim_reverification("h"), "the first caller re-verifies the token"
    assert not cache.claim_reverification("h"), "nobody else does"
    assert cache.fresh("h") is SERVICE
    cache.put("h", SERVICE, clock.now)  # what the re-verification found
    clock.now += 14
    assert cache.fresh("h") is SERVICE, "a new window began at the re-verification"
    assert not cache.claim_reverification("h")


def test_a_claim_that_never_came_back_lapses() -> None:
    cache, clock = cache_with_entry()
    clock.now += 16
    assert cache.claim_reverification("h")
    clock.now += cache.claim_seconds - 0.1
    assert not cache.claim_reverification("h")
    clock.now += 0.2
    assert cache.claim_reverification("h"), "another caller tries"


def test_nothing_is_trusted_past_the_window() -> None:
    cache, clock = cache_with_entry()
    clock.now += 30
    assert cache.fresh("h") is None
    assert cache.last_known("h") is SERVICE, "still the last known caller for an outage"


def test_a_lookup_that_began_before_a_clear_is_not_kept() -> None:
    """A revocation clears the cache; a lookup that read the row before it committed must not
    put the revoked token back."""
    cache, clock = cache_with_entry()
    looked_up_at = clock.now
    clock.now += 0.01
    cache.clear()
    clock.now += 0.01
    cache.put("h", SERVICE, looked_up_at)
    assert cache.fresh("h") is None
    cache.put("h", SERVICE, clock.now)
    assert cache.fresh("h") is SERVICE


def test_forget_and_reverification_drop_trust() -> None:
    cache, clock = cache_with_entry()
    cache.require_reverification()
    assert cache.fresh("h") is None
    clock.now += 1
    cache.put("h", SERVICE, clock.now)
    assert cache.fresh("h") is SERVICE
    cache.forget("h")
    assert cache.fresh("h") is None
    assert cache.last_known("h") is None


def test_twin_without_the_clear_mark_a_revoked_token_comes_back() -> None:
    cache, clock = cache_with_entry()
    looked_up_at = clock.now
    clock.now += 0.01
    cache.clear()
    cache._cleared_at = 0.0  # guard off
    cache.put("h", SERVICE, looked_up_at)
    assert cache.fresh("h") is SERVICE
