"""A worker at capacity (SWITCHBOARD_WORKER_MAX_CALLS) refuses new calls instead of making
every call on it late: webhooks are answered busy before the control plane issues anything,
browser test calls are told why, /readyz says 503 for the load balancer. A stream for a call that
was issued is still bridged. The guard's twin (capacity check switched off) lets the extra call in.
"""

import httpx
import pytest
from websockets.asyncio.client import connect

from switchboard_runtime.worker.capacity import CallCapacity
from tests.integration.callstack import (
    CALLER_FRAMES,
    Phone,
    Stack,
    answer_telnyx,
    answer_twilio,
    phone_call,
    poll,
    twilio_params,
    wait_for_report,
)
from tests.integration.test_browser_calls import Browser, acme_token, mint, open_call
from tests.integration.test_call_entry import calls_of, stream

BUSY = '<Reject reason="busy"/>'


def limit_worker(stack: Stack, max_calls: int | None, hold_seconds: float = 15.0) -> CallCapacity:
    capacity = CallCapacity(max_calls, hold_seconds=hold_seconds)
    stack.worker_app.state.capacity = capacity
    return capacity


def readyz(stack: Stack) -> httpx.Response:
    return httpx.get(f"{stack.worker}/readyz")


def metric(stack: Stack, name: str) -> float:
    for line in httpx.get(f"{stack.worker}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_a_full_worker_answers_busy_and_the_control_plane_issues_nothing(
    stack: Stack,
) -> None:
    limit_worker(stack, 1)
    assert readyz(stack).json() == {"status": "ready", "calls": 0, "max_calls": 1}
    async for phone in phone_call(stack, "twilio"):
        await phone.speak(CALLER_FRAMES)
        await phone.collect(lambda p: len(p.media()) >= len(stack.xai.reply_audio))
        second = await answer_twilio(stack, params=twilio_params("CA456"))
        third = await answer_telnyx(stack)
        assert (second.status, third.status) == (200, 200)
        assert BUSY in second.text and BUSY in third.text
        assert len(calls_of(stack)["calls"]) == 1  # the control plane issued the first only
        ready = readyz(stack)
        assert ready.status_code == 503
        assert ready.json() == {"status": "at_capacity", "calls": 1, "max_calls": 1}
        assert metric(stack, "switchboard_worker_calls") == 1
        assert metric(stack, "switchboard_worker_max_calls") == 1
        assert metric(stack, "switchboard_worker_calls_refused_total") == 2
        await phone.hang_up()
    await wait_for_report(stack)
    await poll(lambda: readyz(stack).status_code == 200)  # the call ended: its place is free
    after = await answer_twilio(stack, params=twilio_params("CA789"))
    assert after.stream_token, after.text


async def test_without_the_capacity_check_the_extra_call_is_issued_on_a_full_worker(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit_worker(stack, 1)
    monkeypatch.setattr(CallCapacity, "has_room", lambda _self: True)
    first = await answer_twilio(stack)
    second = await answer_twilio(stack, params=twilio_params("CA456"))
    assert first.stream_token and second.stream_token, second.text
    assert len(calls_of(stack)["calls"]) == 2


async def test_an_answered_call_whose_stream_never_comes_gives_its_place_back(
    stack: Stack,
) -> None:
    limit_worker(stack, 1, hold_seconds=0.5)
    first = await answer_twilio(stack)
    assert first.stream_token
    assert BUSY in (await answer_twilio(stack, params=twilio_params("CA456"))).text
    await poll(lambda: readyz(stack).status_code == 200, seconds=3)
    assert (await answer_twilio(stack, params=twilio_params("CA789"))).stream_token


async def test_a_stream_for_an_issued_call_is_bridged_even_on_a_full_worker(stack: Stack) -> None:
    answer = await answer_twilio(stack)  # issued while there was room (or by another replica)
    capacity = limit_worker(stack, 1)
    with capacity.running("a call this worker already carries"):
        phone: Phone = await stream(
            stack, f"/ws/twilio/{stack.agent_id}", {"stream_token": answer.stream_token or ""}
        )
        await phone.speak(CALLER_FRAMES)
        await phone.collect(lambda p: len(p.media()) >= len(stack.xai.reply_audio))
        assert capacity.in_use == 2
        await phone.hang_up()
        await phone.ws.close()
    await wait_for_report(stack)
    assert capacity.refused == 0


async def a_test_call_on_a_full_worker(stack: Stack) -> tuple[str, str]:
    """The worker full (a call's stream on its way), and a freshly minted test call: url, token."""
    capacity = limit_worker(stack, 1)
    capacity.hold("a call whose stream is on its way")
    minted = await mint(stack, await acme_token(stack))
    assert minted.status_code == 201, minted.text
    return minted.json()["url"], minted.json()["token"]


async def test_a_browser_call_on_a_full_worker_is_told_why_and_keeps_its_token(
    stack: Stack,
) -> None:
    url, token = await a_test_call_on_a_full_worker(stack)
    # Refused at once, before the page has sent its token: nothing to redeem.
    browser = Browser(await connect(url))
    assert await browser.closed() == (4403, "worker_at_capacity")
    assert browser.of("error")[0]["message"].startswith("This call worker is at capacity")
    assert metric(stack, "switchboard_worker_calls_refused_total") == 1
    limit_worker(stack, None)  # room again: the token still works
    again = await open_call(url, token)
    await again.read_until(lambda b: b.of("ready"))
    await again.ws.close()


async def test_without_the_capacity_check_a_browser_call_runs_on_a_full_worker(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CallCapacity, "has_room", lambda _self: True)
    browser = await open_call(*await a_test_call_on_a_full_worker(stack))
    await browser.read_until(lambda b: b.of("ready"))
    await browser.ws.close()
