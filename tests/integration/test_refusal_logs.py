"""Refusals anyone on the network can cause are logged at most once a minute per kind, on the
worker and on the control plane: an unsigned webhook, a stream with no token or a made-up one.
Otherwise each would be a WARNING line, as fast as an anonymous client can send them: a full
disk, and the warnings that matter drowned. /metrics still counts every one. Each beside its
twin, with the throttle switched off, where every refusal is a line."""

import logging
import re

import httpx
import pytest

from switchboard_runtime.logging import RepeatedWarnings
from tests.integration.callstack import Stack, answer_twilio, twilio_params
from tests.integration.test_call_entry import refused_stream

FLOOD = 6
WORKER_SAYS = {
    "webhook": re.compile(r"twilio call for acme/\S+ refused: webhook_signature_invalid"),
    "no token": re.compile(r"stream refused for agent \S+: no usable stream token"),
    "made-up token": re.compile(r"stream refused for agent \S+: stream_token_invalid"),
}
CONTROL_PLANE_SAYS = re.compile(r"webhook refused for workspace acme: webhook_signature_invalid")


async def flood(stack: Stack) -> None:
    """FLOOD unsigned webhooks, streams without a token and streams with a made-up one."""
    for index in range(FLOOD):
        answer = await answer_twilio(
            stack, signature="bm90IGEgc2lnbmF0dXJl", params=twilio_params(f"CA-flood-{index}")
        )
        assert (answer.status, answer.text) == (403, "forbidden")
        await refused_stream(stack, None)
        await refused_stream(stack, {"stream_token": f"made-up-{index}"})


def said(caplog: pytest.LogCaptureFixture, pattern: re.Pattern[str]) -> int:
    return sum(
        1
        for record in caplog.records
        if record.levelno >= logging.WARNING and pattern.search(record.getMessage())
    )


def refusals_counted(stack: Stack) -> dict[str, float]:
    response = httpx.get(f"{stack.worker}/metrics")
    response.raise_for_status()
    found = re.findall(
        r'^switchboard_worker_refusals_total\{kind="([^"]+)"\} (\S+)$', response.text, re.M
    )
    return {kind: float(value) for kind, value in found}


async def test_a_flood_of_refusals_is_one_line_a_kind_and_every_one_counted(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        await flood(stack)
    assert {what: said(caplog, pattern) for what, pattern in WORKER_SAYS.items()} == {
        "webhook": 1,
        "no token": 1,
        "made-up token": 1,
    }
    assert said(caplog, CONTROL_PLANE_SAYS) == 1
    assert refusals_counted(stack) == {
        "issue:webhook_signature_invalid": FLOOD,
        "stream:no_usable_token": FLOOD,
        "claim:stream_token_invalid": FLOOD,
    }


async def test_twin_without_the_throttle_every_refusal_is_a_line(
    stack: Stack, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def every_time(self: RepeatedWarnings, kind: str, message: str, *args: object) -> None:
        self.logger.warning(message, *args)

    monkeypatch.setattr(RepeatedWarnings, "warn", every_time)
    with caplog.at_level(logging.WARNING):
        await flood(stack)
    assert {what: said(caplog, pattern) for what, pattern in WORKER_SAYS.items()} == {
        "webhook": FLOOD,
        "no token": FLOOD,
        "made-up token": FLOOD,
    }
    assert said(caplog, CONTROL_PLANE_SAYS) == FLOOD
