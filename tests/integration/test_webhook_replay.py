"""One provider call, one issued call. A signed webhook delivered again (a provider's retry, or a
captured request replayed) gets back the same call and token while its stream has not come,
holding no second slot and opening no second xAI session; once the call is claimed or ended it
is refused. A Telnyx body is bound to its call_control_id, so it cannot start a call on another
agent either. The twin, with the binding switched off, shows the replay attack succeeding."""

import itertools
import time
from typing import Any

import httpx
import pytest

from control_plane.calls import webhooks
from tests.conftest import auth
from tests.integration.callstack import (
    CALLER_FRAMES,
    Answer,
    Stack,
    answer_telnyx,
    answer_twilio,
    twilio_params,
    wait_for_report,
)
from tests.integration.test_call_entry import stream

BUSY = '<Reject reason="busy"/>'


async def calls_of(stack: Stack) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.control_plane) as http:
        response = await http.get("/api/v1/workspaces/acme/calls", headers=auth(stack.admin_token))
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def cap_acme(stack: Stack, calls: int) -> None:
    async with httpx.AsyncClient(base_url=stack.control_plane) as http:
        response = await http.patch(
            "/api/v1/workspaces/acme/settings",
            json={"max_concurrent_calls": calls},
            headers=auth(stack.admin_token),
        )
    response.raise_for_status()


def warm_sessions(stack: Stack) -> int:
    return int(stack.worker_app.state.warm.counts["started"])


async def replay(stack: Stack, times: int, params: dict[str, str]) -> list[Answer]:
    return [await answer_twilio(stack, params=params) for _ in range(times)]


async def test_a_replayed_twilio_webhook_gets_the_same_call(stack: Stack) -> None:
    params = twilio_params()
    answers = await replay(stack, 5, params)
    assert {a.status for a in answers} == {200}
    assert len({a.stream_token for a in answers}) == 1 and answers[0].stream_token
    listed = await calls_of(stack)
    assert len(listed["calls"]) == 1 and listed["active"] == 1  # one call, one slot
    assert warm_sessions(stack) == 1  # one xAI session set up, not five
    # The one call runs as any other.
    phone = await stream(
        stack, f"/ws/twilio/{stack.agent_id}", {"stream_token": answers[0].stream_token or ""}
    )
    await phone.speak(CALLER_FRAMES)
    await phone.collect(lambda p: len(p.media()) >= len(stack.xai.reply_audio))
    assert len(phone.media()) >= len(stack.xai.reply_audio)
    # Once claimed, the same webhook starts nothing: a polite hang-up, still one call.
    again = await answer_twilio(stack, params=params)
    assert "<Hangup/>" in again.text and "<Stream" not in again.text
    await phone.hang_up()
    await phone.ws.close()
    await wait_for_report(stack)
    assert len((await calls_of(stack))["calls"]) == 1
    assert len(stack.xai.connections) == 1


async def test_a_captured_webhook_replayed_does_not_crowd_out_real_callers(
    stack: Stack,
) -> None:
    await cap_acme(stack, 3)
    captured = twilio_params()
    assert all(a.stream_token for a in await replay(stack, 6, captured))
    real = [await answer_twilio(stack, params=twilio_params()) for _ in range(2)]
    assert [BUSY in a.text or a.stream_token is None for a in real] == [False, False]
    assert (await calls_of(stack))["active"] == 3


async def test_with_the_binding_switched_off_a_replay_issues_call_after_call(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = itertools.count()
    monkeypatch.setattr(webhooks, "twilio_call_id", lambda params: f"unbound-{next(fresh)}")
    await cap_acme(stack, 3)
    captured = twilio_params()
    answers = await replay(stack, 3, captured)
    assert len({a.stream_token for a in answers}) == 3  # three calls from one request
    assert warm_sessions(stack) == 3
    real = await answer_twilio(stack, params=twilio_params())
    assert BUSY in real.text  # the workspace's real caller is answered busy


async def test_a_telnyx_webhook_cannot_start_a_second_call_on_another_agent(
    stack: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.control_plane) as http:
        other = await http.post(
            "/api/v1/workspaces/acme/agents",
            json={"name": "Bea", "pricing_tier": "grok-realtime", "voice": "Eve"},
            headers=auth(stack.admin_token),
        )
    other.raise_for_status()
    body = b"CallControlId=v3%3Acaptured&From=%2B15550100&To=%2B15550199"
    sent_at = int(time.time())
    first = await answer_telnyx(stack, body=body, timestamp=sent_at, call_id="unused")
    same = await answer_telnyx(stack, body=body, timestamp=sent_at)
    elsewhere = await answer_telnyx(stack, other.json()["id"], body=body, timestamp=sent_at)
    assert first.stream_url and same.stream_url == first.stream_url  # the same call, again
    assert "<Stream" not in elsewhere.text  # not a second call on another agent
    listed = await calls_of(stack)
    assert [c["provider_call_id"] for c in listed["calls"]] == ["v3:captured"]


def test_the_signed_call_id_is_read_from_each_kind_of_telnyx_body() -> None:
    assert webhooks.telnyx_call_id(b"CallSid=v3%3Aa&CallControlId=v3%3Ab") == "v3:b"
    assert webhooks.telnyx_call_id(b"CallSid=v3%3Aa") == "v3:a"
    event = b'{"data": {"event_type": "call.initiated", "payload": {"call_control_id": "v3:c"}}}'
    assert webhooks.telnyx_call_id(event) == "v3:c"
    assert webhooks.telnyx_call_id(b'{"data": {"payload": []}}') is None
    assert webhooks.telnyx_call_id(b"From=%2B15550100") is None
    assert webhooks.twilio_call_id({"From": "+15550100"}) is None


async def test_a_signed_webhook_that_names_no_call_is_refused(stack: Stack) -> None:
    params = twilio_params()
    del params["CallSid"]
    answer = await answer_twilio(stack, params=params)
    assert answer.status == 403
    assert (await calls_of(stack))["calls"] == []
