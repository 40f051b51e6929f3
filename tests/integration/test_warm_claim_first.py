"""On the warm path no audio moves until the control plane has redeemed the token the stream
presented: a token already used elsewhere (another worker took the call) finds the warm session
here, and is closed with not one caller frame sent to xAI and not one agent frame played. The
twin, with the claim's answer switched off (every token taken as redeemed), shows the stolen
stream talking to xAI."""

import asyncio
from typing import Any

import httpx
import pytest

from switchboard_runtime.client import ClaimedCall
from switchboard_runtime.worker import calls as worker_calls
from tests.conftest import auth
from tests.integration.callstack import (
    CALLER_FRAMES,
    Phone,
    Stack,
    answer_twilio,
    poll,
    wait_for_report,
)
from tests.integration.test_call_entry import UNAUTHORIZED, stream


async def warm_call_claimed_elsewhere(stack: Stack) -> str:
    """A call issued here, its xAI session warm here, and its token redeemed by another
    worker (as the control plane sees it): the token."""
    answer = await answer_twilio(stack)
    token = answer.stream_token
    assert token
    await poll(lambda: stack.worker_app.state.warm.open == 1)
    await poll(lambda: len(stack.xai.connections) == 1)  # warm: xAI is already connected
    async with httpx.AsyncClient(base_url=stack.control_plane) as http:
        claimed = await http.post(
            "/api/v1/calls/claim",
            json={"stream_token": token, "agent_id": stack.agent_id, "stream": "phone"},
            headers=auth(stack.service_token),
        )
    assert claimed.status_code == 200, claimed.text
    return token


def caller_frames_at_xai(stack: Stack) -> int:
    return sum(len(c.of_type("input_audio_buffer.append")) for c in stack.xai.connections)


async def speak_on_stolen_stream(stack: Stack, token: str) -> Phone:
    phone = await stream(stack, f"/ws/twilio/{stack.agent_id}", {"stream_token": token})
    await phone.speak(CALLER_FRAMES)
    await asyncio.sleep(0.5)  # time for any audio to have gone both ways
    return phone


async def test_a_token_used_elsewhere_moves_no_audio_on_the_warm_session(stack: Stack) -> None:
    token = await warm_call_claimed_elsewhere(stack)
    phone = await speak_on_stolen_stream(stack, token)
    assert await phone.closed() == UNAUTHORIZED
    assert phone.media() == []  # nothing of the agent reached the stolen stream
    assert caller_frames_at_xai(stack) == 0  # nothing of the caller reached xAI
    assert stack.worker_app.state.call_starts["warm"] == 1


async def test_with_every_token_taken_as_redeemed_the_stolen_stream_talks_to_xai(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def anything_goes(_cp: Any, agent_id: str, _token: Any, *_rest: Any, **_kw: Any) -> Any:
        return ClaimedCall(
            call_id="call_stolen",
            workspace_id="acme",
            agent_id=agent_id,
            lease_seconds=60,
            channel="twilio",
        )

    monkeypatch.setattr(worker_calls, "authorize_stream", anything_goes)
    token = await warm_call_claimed_elsewhere(stack)
    phone = await speak_on_stolen_stream(stack, token)
    await phone.collect(lambda p: len(p.media()) >= len(stack.xai.reply_audio))
    assert len(phone.media()) >= len(stack.xai.reply_audio)
    assert caller_frames_at_xai(stack) >= len(CALLER_FRAMES)
    await phone.hang_up()
    await phone.ws.close()


async def test_a_warm_call_with_its_own_token_runs_as_before(stack: Stack) -> None:
    answer = await answer_twilio(stack)
    await poll(lambda: stack.worker_app.state.warm.open == 1)
    phone = await stream(
        stack, f"/ws/twilio/{stack.agent_id}", {"stream_token": answer.stream_token or ""}
    )
    await phone.speak(CALLER_FRAMES)
    await phone.collect(lambda p: len(p.media()) >= len(stack.xai.reply_audio))
    assert len(phone.media()) >= len(stack.xai.reply_audio)
    await phone.hang_up()
    await phone.ws.close()
    await wait_for_report(stack)
    assert stack.telemetry.reports[-1].warm_start is True
