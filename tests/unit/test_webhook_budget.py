"""`WebhookRefusalBudget`: refusals per address in a sliding minute; an accepted webhook vouches
for its address; the addresses kept are bounded."""

from switchboard_runtime.worker.webhook_budget import WebhookRefusalBudget
from tests.clock import Clock


def test_an_address_is_held_back_for_the_rest_of_its_minute() -> None:
    clock = Clock(500.0)
    budget = WebhookRefusalBudget(per_minute=2, clock=clock)
    assert budget.allows("198.51.100.7")
    budget.refused("198.51.100.7")
    clock.now += 30
    budget.refused("198.51.100.7")
    assert not budget.allows("198.51.100.7")
    assert budget.allows("203.0.113.9")  # another address is not held back
    clock.now += 30  # the first refusal is a minute old
    assert budget.allows("198.51.100.7")
    assert budget.held_back == 1


def test_an_accepted_webhook_vouches_for_its_address_for_a_while() -> None:
    clock = Clock(500.0)
    budget = WebhookRefusalBudget(per_minute=1, vouched_seconds=600, clock=clock)
    budget.accepted("192.0.2.1")
    for _ in range(5):
        budget.refused("192.0.2.1")
    assert budget.allows("192.0.2.1")
    clock.now += 601  # the vouch is over (and those refusals too old to count)
    assert budget.allows("192.0.2.1")
    budget.refused("192.0.2.1")
    assert not budget.allows("192.0.2.1")


def test_addresses_kept_are_bounded() -> None:
    budget = WebhookRefusalBudget(per_minute=1, max_addresses=10, clock=Clock(500.0))
    for index in range(25):
        budget.refused(f"10.0.0.{index}")
    assert len(budget._refusals) <= 10
    assert not budget.allows("10.0.0.24")  # the newest are the ones kept
