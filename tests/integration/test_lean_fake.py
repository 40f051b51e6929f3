"""The runtime benchmark's lean transport for the fake xAI carries the same conversation as the
fake's Starlette endpoint: same refusals, same events in the same order for the same script."""

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.fakes import stamps
from tests.fakes.fake_xai import MINIMAL_SESSION, FakeXAIState, RealtimeConversation, build_app
from tests.fakes.lean_realtime import serve_realtime
from tests.fakes.server import BackgroundServer, free_port

KEY = "xai-" + "LeanFakeKey0123456789" + "abcdefgh"
SPEECH = base64.b64encode(bytes([0x7F]) * 160).decode()


def scripted_state() -> FakeXAIState:
    state = FakeXAIState(accepted_keys={KEY}, frames_per_utterance=3)
    state.reply_audio = [bytes([i]) * 160 for i in range(1, 4)]
    return state


async def one_turn(url: str) -> list[str]:
    """session.update, one utterance, the whole reply: the event types received, in order."""
    received: list[str] = []
    async with connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}) as xai:
        await xai.send(json.dumps({"type": "session.update", "session": MINIMAL_SESSION}))
        for _ in range(3):
            await xai.send(json.dumps({"type": "input_audio_buffer.append", "audio": SPEECH}))
        async for raw in xai:
            event: dict[str, Any] = json.loads(raw)
            received.append(event["type"])
            if event["type"] == "response.done":
                break
    return received


@pytest.fixture
async def lean_url() -> AsyncIterator[tuple[str, FakeXAIState]]:
    state = scripted_state()
    port = free_port()
    server = await serve_realtime(state, "127.0.0.1", port)
    yield f"ws://127.0.0.1:{port}/v1/realtime?model=grok-voice-latest", state
    server.close()


async def test_the_lean_transport_speaks_the_same_conversation(
    lean_url: tuple[str, FakeXAIState],
) -> None:
    url, state = lean_url
    starlette_state = scripted_state()
    with BackgroundServer(build_app(starlette_state)) as server:
        starlette_url = server.base_url.replace("http", "ws", 1) + "/v1/realtime?model=m"
        expected = await one_turn(starlette_url)

    assert await one_turn(url) == expected
    assert "session.updated" in expected and expected.count("response.output_audio.delta") == 3
    assert state.connections[0].model == "grok-voice-latest"
    assert [e["type"] for e in state.connections[0].received][:2] == [
        "session.update",
        "input_audio_buffer.append",
    ]


async def test_the_lean_transport_refuses_a_wrong_key_and_closes_when_asked(
    lean_url: tuple[str, FakeXAIState],
) -> None:
    url, state = lean_url
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, additional_headers={"Authorization": "Bearer xai-wrong"})
    assert refused.value.response.status_code == 403

    state.session_limit_seconds = 0.05  # the fake closes the session itself
    async with connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}) as xai:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(xai.recv(), 5)
            await asyncio.wait_for(xai.recv(), 5)
            await asyncio.wait_for(xai.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    assert state.connections[-1].closed_by_fake == "session_limit"


def stamped_state() -> FakeXAIState:
    """The runtime benchmark's fake: stamped μ-law, level VAD, nothing recorded."""
    state = scripted_state()
    state.stamped_audio, state.record_connections = True, False
    state.reply_audio = [bytes([stamps.SILENCE]) * stamps.FRAME_BYTES for _ in range(3)]
    return state


def stamped_frame(talking: bool) -> str:
    body = bytes([stamps.SPEECH if talking else stamps.SILENCE]) * (
        stamps.FRAME_BYTES - stamps.STAMP_BYTES
    )
    return base64.b64encode(stamps.stamp(time.time()) + body).decode()


async def two_stamped_turns(url: str) -> list[str]:
    """Quiet, an utterance, quiet until the reply is done, twice: the event types received."""
    received: list[str] = []
    async with connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}) as xai:
        await xai.send(json.dumps({"type": "session.update", "session": MINIMAL_SESSION}))
        for _ in range(2):
            for talking in [False] * 4 + [True] * 4 + [False] * 4:
                append = {"type": "input_audio_buffer.append", "audio": stamped_frame(talking)}
                await xai.send(json.dumps(append))
                await asyncio.sleep(0.01)  # 20 ms frames, a little faster: the fake idles between
            async for raw in xai:
                received.append(json.loads(raw)["type"])
                if received[-1] == "response.done":
                    break
    return received


async def test_stamped_appends_heard_in_the_callback_change_nothing_the_peer_is_sent() -> None:
    starlette_state, lean_state = stamped_state(), stamped_state()
    with BackgroundServer(build_app(starlette_state)) as server:
        starlette_url = server.base_url.replace("http", "ws", 1) + "/v1/realtime?model=m"
        expected = await two_stamped_turns(starlette_url)
    port = free_port()
    lean = await serve_realtime(lean_state, "127.0.0.1", port)
    received = await two_stamped_turns(f"ws://127.0.0.1:{port}/v1/realtime?model=m")
    lean.close()

    assert received == expected
    assert expected.count("input_audio_buffer.speech_started") == 2
    assert expected.count("response.output_audio.delta") == 6
    assert len(lean_state.caller_lags) == len(starlette_state.caller_lags) == 24
    assert starlette_state.appends_heard_at_once == 0
    # Every append but the two that start and the two that end speech can be taken at once;
    # one that arrives while the conversation is busy (a slow host) waits its turn.
    assert 12 <= lean_state.appends_heard_at_once <= 20


async def test_a_callback_that_swallowed_speech_would_be_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The comparison above fails for an eager twin that takes loud frames too."""

    def eager(self: RealtimeConversation, event: Any) -> bool:
        if event.get("type") != "input_audio_buffer.append" or not self.state.stamped_audio:
            return False
        self.state.appends_heard_at_once += 1
        return True

    monkeypatch.setattr(RealtimeConversation, "hear_at_once", eager)
    port = free_port()
    lean = await serve_realtime(stamped_state(), "127.0.0.1", port)
    with pytest.raises(TimeoutError):  # no speech heard: no reply ever comes
        await asyncio.wait_for(two_stamped_turns(f"ws://127.0.0.1:{port}/v1/realtime?model=m"), 2)
    lean.close()
