"""Both ends of the xAI socket read by an independent oracle: pipecat's typed xAI realtime
events (`pipecat/services/xai/realtime/events.py`). Every event the runtime sends in a call with
audio, a barge-in, a tool call and text must validate as pipecat's client event of its type, and
every event the fake xAI sends (but the one it invents to test unknown types) must parse with
pipecat's server-event table — so neither the runtime nor the fake drifts from the protocol as
someone else reads it. The hand-written hot-path encodings equal their models'."""

import json
from typing import Any

import pipecat.services.xai.realtime.events as pipecat_events
import pytest

from switchboard_runtime import events, protocol
from switchboard_runtime.session import ClearAudio
from switchboard_runtime.telephony import DIALECTS
from tests.fakes.fake_xai import ToolTurn
from tests.integration.callstack import CALLER_FRAMES, Stack, session_for, wait_for_report
from tests.integration.test_runtime_robustness import audio, collect, speak

CLIENT_EVENTS: dict[str, Any] = {
    "session.update": pipecat_events.SessionUpdateEvent,
    "input_audio_buffer.append": pipecat_events.InputAudioBufferAppendEvent,
    "conversation.item.create": pipecat_events.ConversationItemCreateEvent,
    "response.create": pipecat_events.ResponseCreateEvent,
    "response.cancel": pipecat_events.ResponseCancelEvent,
}
INVENTED = {"x.future_event"}  # the fake's own unknown type, sent to test skipping


async def test_every_event_on_the_xai_socket_reads_as_pipecat_reads_it(stack: Stack) -> None:
    stack.xai.tool_turns[0] = ToolTurn("lookup_order", {"id": "A1"}, style="streamed")
    stack.xai.delta_interval = 0.03
    stack.xai.reply_audio = [bytes([i]) * 160 for i in range(1, 41)]
    stack.xai.audio_after_cancel = 1
    async with session_for(stack) as call:
        await speak(call)  # utterance 0: a tool call, then the model goes on speaking
        await collect(call, lambda seen: len(audio(seen)) >= 3)
        await speak(call, CALLER_FRAMES[:1])  # the caller talks over it: a barge-in
        await collect(call, lambda seen: any(isinstance(e, ClearAudio) for e in seen))
        await call.send_text("And my other order?")
        await collect(call, lambda seen: len(audio(seen)) >= 1)
    await wait_for_report(stack)
    connection = stack.xai.connections[-1]

    sent_types = {event["type"] for event in connection.received}
    assert set(CLIENT_EVENTS) <= sent_types, sent_types  # the call used every kind we send
    for event in connection.received:
        CLIENT_EVENTS[event["type"]].model_validate(event)

    received_types = set()
    for event in connection.sent:
        if event["type"] in INVENTED:
            continue
        parsed = pipecat_events.parse_server_event(json.dumps(event))
        assert parsed.type == event["type"]
        received_types.add(event["type"])
    assert {
        "conversation.created",
        "session.updated",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_audio.delta",
        "response.done",
    } <= received_types, received_types


def test_the_written_out_audio_append_equals_its_model() -> None:
    payload = CALLER_FRAMES[0]
    fast = json.loads(protocol.append_audio(payload))
    model = json.loads(events.InputAudioAppend(audio=payload).encode())
    assert fast.pop("event_id") != model.pop("event_id")  # each event its own id
    assert fast == model
    odd = 'not "base64"\n\u00e9'  # escaped like any JSON string, whatever an embedder sends
    assert json.loads(protocol.append_audio(odd))["audio"] == odd


@pytest.mark.parametrize("provider", ["twilio", "telnyx"])
def test_the_written_out_phone_media_frame_is_the_documented_frame(provider: str) -> None:
    dialect = DIALECTS[provider]
    stream_id = 'MZ"1\\'  # quoted and escaped, never spliced raw
    frame = json.loads(dialect.media(stream_id, CALLER_FRAMES[1]))
    expected: dict[str, Any] = {"event": "media", "media": {"payload": CALLER_FRAMES[1]}}
    if provider == "twilio":
        expected["streamSid"] = stream_id
    assert frame == expected
