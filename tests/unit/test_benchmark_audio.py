"""The benchmarks' stamped audio (tests/fakes/stamps.py) and how the fake xAI hears it.

`make bench-peers` times a pipecat bot, which decodes Twilio's μ-law to PCM16 for xAI and
encodes the reply back; the send time each 20 ms of audio carries must survive pipecat's own
conversions, and the fake must hear speech and answer in whichever format the bridge chose.
"""

import array
import asyncio
import base64
import json
import time
import warnings
from typing import Any

import pytest

from tests.fakes import stamps
from tests.fakes.fake_xai import (
    Connection,
    FakeXAIState,
    RealtimeConversation,
    audio_delta_text,
)

# audioop is deprecated but still in 3.11: the reference G.711 codec, and pipecat's own.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

    from pipecat.audio.resamplers.soxr_resampler import SOXRAudioResampler
    from pipecat.audio.utils import pcm_to_ulaw, ulaw_to_pcm


def test_the_g711_tables_agree_with_the_reference_codec_on_every_value() -> None:
    every_sample = array.array("h", range(-32768, 32768)).tobytes()
    assert stamps.pcm16_to_ulaw(every_sample) == audioop.lin2ulaw(every_sample, 2)
    every_code = bytes(range(256))
    assert stamps.ulaw_to_pcm16(every_code) == audioop.ulaw2lin(every_code, 2)


async def test_a_stamp_survives_pipecats_twilio_conversions_at_telephone_rate() -> None:
    sent_at = time.time()
    frame = stamps.stamp(sent_at) + bytes([stamps.SPEECH]) * (160 - stamps.STAMP_BYTES)
    resampler = SOXRAudioResampler()
    pcm = await ulaw_to_pcm(frame, 8000, 8000, resampler)  # what the serializer hands xAI
    back = await pcm_to_ulaw(pcm, 8000, 8000, resampler)  # and what it sends the phone
    assert back == frame
    assert stamps.read_stamp(stamps.pcm16_to_ulaw(pcm)) == pytest.approx(sent_at, abs=1e-6)
    assert not stamps.is_silence(back)


def test_a_stamp_is_its_microseconds_in_six_bit_digits_and_reads_back_exactly() -> None:
    moments = [0.0, 1e-6, 1.0, *(time.time() + k * 0.000_997 for k in range(2_000))]
    for at in moments:
        micros = round(at * 1_000_000)
        digits = [(micros >> (6 * k)) & 0x3F for k in reversed(range(stamps.STAMP_BYTES))]
        assert stamps.stamp(at) == bytes(digits)
        assert stamps.read_stamp(stamps.stamp(at) + b"\xff" * 151) == micros / 1_000_000
    # The body never leaks into the stamp, nor a byte's top bits (0x7F comes back as 0xFF).
    assert stamps.read_stamp(bytes([0xFF] * 9) + b"\x2a") == stamps.read_stamp(bytes([0x3F] * 9))


def test_the_one_mu_law_byte_that_does_not_come_back_is_never_in_a_stamp() -> None:
    assert audioop.lin2ulaw(audioop.ulaw2lin(b"\x7f", 2), 2) == b"\xff"
    assert all(max(stamps.stamp(time.time() + offset)) <= 0x3F for offset in range(0, 10**6, 997))


class ScriptedSocket:
    """The conversation's WebSocket: events in from a queue, events out into a list."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[str] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []

    async def receive_text(self) -> str:
        return await self.incoming.get()

    async def send_text(self, data: str) -> None:
        self.sent.append(json.loads(data))

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        pass

    def types(self) -> list[str]:
        return [event["type"] for event in self.sent]


def stamped_state() -> FakeXAIState:
    state = FakeXAIState(accepted_keys={"k"}, send_unknown_events=False, stamped_audio=True)
    state.reply_audio = [bytes([stamps.SILENCE]) * 160 for _ in range(3)]
    return state


async def until(condition: Any, socket: ScriptedSocket) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened; the fake sent {socket.types()}")


@pytest.mark.parametrize("audio_type", ["audio/pcmu", "audio/pcm"])
async def test_the_fake_hears_stamped_speech_and_stamps_its_reply_in_the_bridges_format(
    audio_type: str,
) -> None:
    state, socket = stamped_state(), ScriptedSocket()
    conversation = RealtimeConversation(state, socket, Connection(model="m", authorization="k"))
    running = asyncio.create_task(conversation.run())
    audio_format = {"type": audio_type, "rate": 8000}
    session = {"audio": {"input": {"format": audio_format}, "output": {"format": audio_format}}}
    await socket.incoming.put(json.dumps({"type": "session.update", "session": session}))

    def append(speech: bool) -> str:
        body = bytes([stamps.SPEECH if speech else stamps.SILENCE]) * (160 - stamps.STAMP_BYTES)
        frame = stamps.stamp(time.time()) + body
        if audio_type == "audio/pcm":
            frame = stamps.ulaw_to_pcm16(frame)
        return json.dumps(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(frame).decode()}
        )

    for speech in (True, True, True, False):  # 60 ms of speech, then the first quiet frame
        await socket.incoming.put(append(speech))
    await until(lambda: "response.done" in socket.types(), socket)
    running.cancel()

    assert socket.types().count("input_audio_buffer.speech_started") == 1
    assert socket.types().count("input_audio_buffer.speech_stopped") == 1
    assert len(state.caller_lags) == 4 and all(0 <= lag < 5 for lag in state.caller_lags)
    deltas = [base64.b64decode(e["delta"]) for e in socket.sent if e["type"].endswith("delta")]
    assert len(deltas) == 3 == state.deltas_sent
    for delta in deltas:
        ulaw = stamps.pcm16_to_ulaw(delta) if audio_type == "audio/pcm" else delta
        assert len(ulaw) == 160 and stamps.is_silence(ulaw)
        assert 0 <= time.time() - stamps.read_stamp(ulaw) < 5


async def test_a_second_response_while_one_is_under_way_is_refused() -> None:
    state, socket = stamped_state(), ScriptedSocket()
    state.delta_interval = 0.05  # the first response is still playing when the second is asked
    conversation = RealtimeConversation(state, socket, Connection(model="m", authorization="k"))
    running = asyncio.create_task(conversation.run())
    await socket.incoming.put(json.dumps({"type": "session.update", "session": {}}))
    await socket.incoming.put(json.dumps({"type": "response.create"}))
    await until(lambda: "response.created" in socket.types(), socket)
    await socket.incoming.put(json.dumps({"type": "response.create", "event_id": "second"}))
    await until(lambda: "response.done" in socket.types(), socket)
    running.cancel()

    assert socket.types().count("response.created") == 1
    (error,) = [event["error"] for event in socket.sent if event["type"] == "error"]
    assert error["code"] == "conversation_already_has_active_response"
    assert error["event_id"] == "second"


async def test_an_utterance_that_ends_while_an_asked_for_response_plays_starts_no_second() -> None:
    state, socket = stamped_state(), ScriptedSocket()
    state.delta_interval = 0.05
    conversation = RealtimeConversation(state, socket, Connection(model="m", authorization="k"))
    running = asyncio.create_task(conversation.run())
    await socket.incoming.put(json.dumps({"type": "session.update", "session": {}}))
    await socket.incoming.put(json.dumps({"type": "response.create"}))
    await until(lambda: "response.created" in socket.types(), socket)
    for speech in (True, False):
        body = bytes([stamps.SPEECH if speech else stamps.SILENCE]) * (160 - stamps.STAMP_BYTES)
        audio = base64.b64encode(stamps.stamp(time.time()) + body).decode()
        await socket.incoming.put(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
    await until(lambda: "response.done" in socket.types(), socket)
    await asyncio.sleep(0.1)
    running.cancel()

    assert "input_audio_buffer.speech_stopped" in socket.types()
    assert socket.types().count("response.created") == 1
    assert state.deltas_sent == 3


async def test_an_audio_delta_goes_out_as_the_fakes_other_events_are_written() -> None:
    """Deltas are written from a template (`audio_delta_text`): as `json.dumps` writes the
    fake's other events (`RealtimeConversation.send`), and recorded as sent."""
    state = stamped_state()
    state.stamped_audio, state.record_connections = False, True
    socket = ScriptedSocket()
    texts: list[str] = []

    async def keep(data: str) -> None:
        texts.append(data)

    socket.send_text = keep  # type: ignore[method-assign]
    record = Connection(model="m", authorization="k")
    await RealtimeConversation(state, socket, record).respond_with_audio()
    deltas = [text for text in texts if '"response.output_audio.delta"' in text]
    assert len(deltas) == 3 == state.deltas_sent
    assert [json.dumps(json.loads(text)) for text in texts] == texts
    assert [json.loads(text) for text in texts] == record.sent
    assert audio_delta_text("e", "r", "i", "QUJD") == json.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": "e",
            "response_id": "r",
            "item_id": "i",
            "output_index": 0,
            "content_index": 0,
            "delta": "QUJD",
        }
    )
