"""Unsigned webhooks from one address stop reaching the control plane: past the worker's
budget of refused webhooks per address and minute they are answered 403 by the worker itself,
so a flood cannot hold the worker's places in its bound on control-plane requests (where real
calls' webhooks would queue behind it). An address that had a webhook accepted is vouched for:
a load balancer missing from TRUSTED_PROXIES carries every caller's webhooks under one address.
Beside its twin, with the budget switched off, where every forged webhook is checked."""

from collections.abc import Iterator
from typing import Any

import pytest

from switchboard_runtime.client import ControlPlaneClient
from switchboard_runtime.worker.webhook_budget import WebhookRefusalBudget
from tests.integration.callstack import Stack, answer_twilio, twilio_params

FORGED = 8
BUDGET = 3


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The webhooks the worker handed to the control plane, by their CallSid."""
    handed: list[str] = []
    issue_call = ControlPlaneClient.issue_call

    async def counted(self: ControlPlaneClient, *args: Any, **kwargs: Any) -> Any:
        handed.append(kwargs.get("provider_call_id") or "")
        return await issue_call(self, *args, **kwargs)

    monkeypatch.setattr(ControlPlaneClient, "issue_call", counted)
    yield handed


async def forged_webhooks(stack: Stack) -> list[int]:
    statuses = []
    for index in range(FORGED):
        answer = await answer_twilio(
            stack, signature="bm90IGEgc2lnbmF0dXJl", params=twilio_params(f"CA-forged-{index}")
        )
        statuses.append(answer.status)
    return statuses


async def test_past_the_budget_forged_webhooks_are_refused_without_asking(
    stack: Stack, asked: list[str]
) -> None:
    stack.worker_app.state.webhook_budget = WebhookRefusalBudget(BUDGET)
    assert await forged_webhooks(stack) == [403] * FORGED
    assert asked == [f"CA-forged-{index}" for index in range(BUDGET)]
    metrics = stack.worker_app.state.refusals.counts
    assert metrics["webhook:address_refused_too_often"] == FORGED - BUDGET


async def test_an_address_with_an_accepted_webhook_is_never_held_back(
    stack: Stack, asked: list[str]
) -> None:
    stack.worker_app.state.webhook_budget = WebhookRefusalBudget(BUDGET)
    first = await answer_twilio(stack, params=twilio_params("CA-real-1"))
    assert first.stream_token
    assert await forged_webhooks(stack) == [403] * FORGED
    assert len(asked) == 1 + FORGED  # all of them checked
    again = await answer_twilio(stack, params=twilio_params("CA-real-2"))
    assert again.stream_token  # the real calls through the same address still get in


async def test_twin_without_the_budget_every_forged_webhook_is_checked(
    stack: Stack, asked: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.worker_app.state.webhook_budget = WebhookRefusalBudget(BUDGET)
    monkeypatch.setattr(WebhookRefusalBudget, "allows", lambda self, address: True)
    assert await forged_webhooks(stack) == [403] * FORGED
    assert len(asked) == FORGED
