"""GrokRealtimeSession and the call worker, end to end: a real control plane, the fake xAI
realtime server and a scripted caller on Twilio's and Telnyx's media-stream protocols."""

import json
from typing import Any

import httpx
import pytest

from switchboard_runtime.session import (
    CallEnded,
    CallRefusedError,
    GrokRealtimeSession,
    SessionConfigError,
)
from tests.conftest import auth
from tests.fakes.fake_xai import ToolTurn
from tests.integration.callstack import (
    CALLER_FRAMES,
    XAI_KEY,
    Stack,
    answer_telnyx,
    answer_twilio,
    assert_audio_passes_untouched,
    phone_call,
    poll,
    session_for,
    wait_for_report,
)

KEY_MISSING = (
    "xAI API key not configured for this workspace. Please add it in Settings > Workspace API Keys."
)


async def test_session_initializes_from_the_control_plane(stack: Stack) -> None:
    async with session_for(stack) as call:
        assert call.ready_at is not None
        connection = stack.xai.connections[-1]
        assert connection.model == "grok-voice-latest"
        assert connection.authorization == XAI_KEY
        update = connection.of_type("session.update")[0]["session"]
        assert update["voice"] == "Ara"  # marin, mapped
        assert update["audio"] == {
            "input": {"format": {"type": "audio/pcmu"}},
            "output": {"format": {"type": "audio/pcmu"}},
        }
        assert (
            update["turn_detection"]["type"] == "server_vad"
            and update["turn_detection"]["threshold"] == 0.7
        )
        assert [t["type"] for t in update["tools"]] == ["function", "web_search"]
        assert "You are Ava." in update["instructions"]
    report = stack.telemetry.reports[-1]
    assert (report.end_reason, report.completed, report.tier) == ("closed", True, "grok-realtime")


async def test_ephemeral_credentials_reach_xai(stack: Stack) -> None:
    async with session_for(stack, credentials="ephemeral"):
        token = stack.xai.connections[-1].authorization
    assert token.startswith("xai-eph-") and token != XAI_KEY


async def test_missing_key_raises_the_seed_message(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.control_plane) as http:
        agent = (
            await http.post(
                "/api/v1/workspaces/globex/agents",
                json={"name": "Gus", "pricing_tier": "grok-realtime", "voice": "Rex"},
                headers=auth(stack.admin_token),
            )
        ).json()
    with pytest.raises(SessionConfigError) as refused:
        async with session_for(stack, workspace="globex", agent_id=agent["id"]):
            pass
    assert refused.value.status == 409
    assert refused.value.code == "xai_api_key_missing"
    assert refused.value.message == KEY_MISSING
    assert stack.xai.connections == []  # never reached xAI, never another provider


async def test_a_config_refused_after_the_call_was_issued_ends_with_its_reason(
    stack: Stack,
) -> None:
    """A warm set-up asks for its config after the call was issued: the workspace's key may
    be gone by then. The report names why, and the call does not count as completed."""
    async with session_for(stack) as first:
        call = first.call
    assert call is not None
    async with httpx.AsyncClient(base_url=stack.control_plane) as http:
        removed = await http.delete(
            "/api/v1/workspaces/acme/settings/api-keys/xai", headers=auth(stack.admin_token)
        )
        assert removed.status_code == 204
    with pytest.raises(SessionConfigError):
        async with session_for(stack, call=call):
            pass
    report = stack.telemetry.reports[-1]
    assert (report.call_id, report.end_reason, report.completed) == (
        call.call_id,
        "xai_api_key_missing",
        False,
    )


async def test_xai_refusing_the_connection_otherwise_is_not_the_keys_fault(stack: Stack) -> None:
    stack.xai.upgrade_failures = [404]  # a model or an address xAI does not know
    with pytest.raises(CallRefusedError) as refused:
        async with session_for(stack):
            pass
    assert refused.value.code == "xai_refused"
    assert stack.telemetry.reports[-1].end_reason == "xai_refused"


async def test_xai_refusing_the_key_ends_cleanly(stack: Stack) -> None:
    stack.xai.accepted_keys.clear()
    with pytest.raises(CallRefusedError) as refused:
        async with session_for(stack):
            pass
    assert refused.value.code == "xai_key_refused"
    assert stack.telemetry.reports[-1].end_reason == "xai_key_refused"
    assert stack.telemetry.reports[-1].completed is False


@pytest.mark.parametrize("kind", ["twilio", "telnyx"])
async def test_audio_passes_through_untouched_and_transcripts_both_sides(
    stack: Stack, kind: str
) -> None:
    async for phone in phone_call(stack, kind):
        await assert_audio_passes_untouched(stack, phone)
        if kind == "twilio":
            await phone.collect(lambda p: bool(p.events("mark")))
            assert phone.events("mark")[0]["streamSid"] == "MZ123"
            assert all(f["streamSid"] == "MZ123" for f in phone.events("media"))
        await phone.hang_up()
    await wait_for_report(stack)
    report = stack.telemetry.reports[-1]
    assert (report.end_reason, report.completed) == ("phone_stop", True)
    assert report.transcript_events == 2  # caller and agent
    assert report.time_to_first_audio_ms is not None and report.time_to_first_audio_ms >= 0
    assert report.websocket_disconnects == 0


async def test_transcripts_are_kept_for_both_sides(stack: Stack) -> None:
    async with session_for(stack) as call:
        for payload in CALLER_FRAMES:
            await call.send_audio(payload)
        await poll(lambda: len(call.transcripts) >= 2)
    assert [(t.role, t.text) for t in call.transcripts] == [
        ("caller", "Hello, where is my order?"),
        ("agent", "Let me check that for you."),
    ]


@pytest.mark.parametrize("style", ["arguments_done", "response_done_only"])
@pytest.mark.parametrize(("order_id", "ok"), [("A-1042", True), ("broken", False)])
async def test_tool_call_end_to_end(stack: Stack, style: str, order_id: str, ok: bool) -> None:
    stack.xai.tool_turns = {0: ToolTurn("lookup_order", {"id": order_id}, style=style)}
    async for phone in phone_call(stack, "twilio"):
        await phone.speak(CALLER_FRAMES)
        await phone.collect(lambda p: len(p.media()) >= len(stack.xai.reply_audio))
        await phone.hang_up()
    await wait_for_report(stack)
    connection = stack.xai.connections[-1]
    outputs = [e["item"] for e in connection.of_type("conversation.item.create")]
    assert len(outputs) == 1  # once, although the call shows up in two events
    assert outputs[0]["type"] == "function_call_output"
    (announced,) = [
        e["item"]
        for e in connection.sent_of_type("response.output_item.added")
        if e["item"]["type"] == "function_call"
    ]
    assert outputs[0]["call_id"] == announced["call_id"]  # answered with its own id
    result = json.loads(outputs[0]["output"])
    if ok:
        assert result == {"status": "shipped", "id": "A-1042"}
    else:
        assert "order service down" in result["error"]
    # The model was told to go on: response.create after the tool output.
    kinds = [e["type"] for e in connection.received]
    assert kinds.index("response.create") > kinds.index("conversation.item.create")
    report = stack.telemetry.reports[-1]
    counts = (report.tool_calls_ok, report.tool_calls_failed, report.tool_calls_failed_in_tool)
    assert counts == ((1, 0, 0) if ok else (0, 1, 1))  # the agent's own tool failed
    assert report.completed is True


async def test_barge_in_cancels_and_clears_the_phone(stack: Stack) -> None:
    stack.xai.delta_interval = 0.05
    stack.xai.reply_audio = [bytes([i]) * 160 for i in range(1, 41)]  # two seconds of reply
    async for phone in phone_call(stack, "twilio"):
        await phone.speak(CALLER_FRAMES)
        await phone.collect(lambda p: len(p.media()) >= 3)
        await phone.speak(CALLER_FRAMES[:1])  # the caller talks over the agent
        await phone.collect(lambda p: bool(p.events("clear")))
        assert phone.events("clear") == [{"event": "clear", "streamSid": "MZ123"}]
        await phone.hang_up()
    await wait_for_report(stack)
    assert len(stack.xai.connections[-1].of_type("response.cancel")) == 1
    # The phone got only part of the reply: the rest was cancelled, not played.
    assert len(phone.media()) < len(stack.xai.reply_audio)


@pytest.mark.parametrize(
    ("script", "reason", "disconnects"),
    [
        ({"drop_on_utterance": 0}, "xai_disconnected", 1),
        (
            {
                "errors_on_utterance": {
                    0: {"type": "authentication_error", "code": "invalid_api_key", "message": "no"}
                }
            },
            "xai_error",
            0,
        ),
    ],
)
async def test_xai_failure_mid_call_ends_cleanly_without_fallback(
    stack: Stack, script: dict[str, Any], reason: str, disconnects: int
) -> None:
    for name, value in script.items():
        setattr(stack.xai, name, value)
    async for phone in phone_call(stack, "twilio"):
        await phone.speak(CALLER_FRAMES)
        with pytest.raises(Exception):  # noqa: B017 - the worker closes the phone's socket
            await phone.collect(lambda p: False, seconds=5)
        assert phone.ws.close_code == 1000
        assert phone.ws.close_reason == reason
    await wait_for_report(stack)
    report = stack.telemetry.reports[-1]
    assert (report.end_reason, report.completed, report.websocket_disconnects) == (
        reason,
        False,
        disconnects,
    )
    assert len(stack.xai.connections) == 1  # no second provider, no retry


async def test_xai_session_limit_ends_the_call_cleanly(stack: Stack) -> None:
    stack.xai.session_limit_seconds = 0.3
    async with session_for(stack) as call:
        events = [event async for event in call.events()]
    assert isinstance(events[-1], CallEnded)
    assert events[-1].reason == "xai_session_limit"
    assert stack.telemetry.reports[-1].completed is True


async def test_unknown_and_bad_phone_frames_do_not_end_the_call(stack: Stack) -> None:
    async for phone in phone_call(stack, "twilio"):
        await phone.ws.send("{not json")
        await phone.ws.send(
            json.dumps({"event": "media", "media": {"payload": "***not base64***"}})
        )
        await phone.ws.send(json.dumps({"event": "dtmf", "dtmf": {"digit": "1"}}))
        await phone.speak(CALLER_FRAMES)
        await phone.collect(lambda p: len(p.media()) >= len(stack.xai.reply_audio))
        await phone.hang_up()
    await wait_for_report(stack)
    assert stack.telemetry.reports[-1].completed is True
    assert len(stack.xai.connections[-1].of_type("input_audio_buffer.append")) == len(CALLER_FRAMES)


async def test_worker_refuses_engines_without_a_handler(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.control_plane) as http:
        agent = (
            await http.post(
                "/api/v1/workspaces/acme/agents",
                json={"name": "Max", "pricing_tier": "premium", "voice": "cedar"},
                headers=auth(stack.admin_token),
            )
        ).json()
    async for phone in phone_call(stack, "twilio", agent_id=agent["id"]):
        assert await phone.closed() == (4403, "no handler registered for engine openai-realtime")
    assert stack.xai.connections == []


async def test_twiml_and_texml_answers(stack: Stack) -> None:
    twiml = await answer_twilio(stack)
    texml = await answer_telnyx(stack)
    assert twiml.status == texml.status == 200
    # Workspace and agent ride in the token, not in anything the caller could change.
    assert twiml.stream_url == stack.ws(f"/ws/twilio/{stack.agent_id}")
    assert twiml.stream_token and twiml.stream_token.startswith("st1.")
    assert texml.stream_url.startswith(stack.ws(f"/ws/telnyx/{stack.agent_id}?token=st1."))
    assert 'bidirectionalMode="rtp"' in texml.text
    assert twiml.stream_token != texml.stream_token


async def test_engine_mismatch_is_refused_by_the_session(stack: Stack) -> None:
    async with session_for(stack) as probe:  # a real config, then pointed at another engine
        assert probe.config is not None
        config = probe.config.model_copy(update={"engine": "openai-realtime"})
    with pytest.raises(CallRefusedError) as refused:
        async with session_for(stack, config=config):
            pass
    assert refused.value.code == "engine_mismatch"
    assert stack.telemetry.reports[-1].end_reason == "engine_mismatch"


async def test_runtime_telemetry_reaches_the_control_plane(stack: Stack) -> None:
    async with GrokRealtimeSession(
        control_plane_url=stack.control_plane,
        service_token=stack.service_token,
        workspace_id="acme",
        agent_id=stack.agent_id,
    ) as call:  # the default sink posts to /api/v1/telemetry/calls
        for payload in CALLER_FRAMES:
            await call.send_audio(payload)
        await poll(lambda: len(call.transcripts) >= 2)
    async with httpx.AsyncClient(base_url=stack.control_plane) as http:
        health = (
            await http.get(
                "/api/v1/rollouts/grok-realtime-tier/health", headers=auth(stack.admin_token)
            )
        ).json()
    assert health["overall"]["calls"] == 1
    assert health["cohorts"]["internal"]["call_completion"]["value"] == 1.0
    assert health["overall"]["first_audio_p50_ms"] is not None


async def test_slow_xai_ends_the_call_cleanly(stack: Stack) -> None:
    stack.xai.handshake_delay = 1.0
    with pytest.raises(CallRefusedError) as refused:
        async with session_for(stack, ready_timeout=0.3):
            pass
    assert refused.value.code == "xai_timeout"
    report = stack.telemetry.reports[-1]
    assert (report.end_reason, report.completed) == ("xai_timeout", False)
