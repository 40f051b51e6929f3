"""The worker relays a frame inside its socket's frame callback when nothing has to wait, both
ways: a caller frame straight on to xAI, an agent audio delta straight on to the phone. The
guard that keeps it honest is order: a frame may be relayed there only while whoever reads
the socket (or plays to the phone) is parked with nothing queued before it, else it would
overtake frames still on their way. Each guard has a twin with the guard switched off, where
the frame does overtake. (A whole call on the media plane relaying this way, byte for byte and
in order: tests/integration/test_media_plane.py.)"""

import asyncio
import json
from collections.abc import Awaitable, Callable, Sized
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from switchboard_runtime.events import AUDIO_DELTA, AudioDelta, parse_audio_delta
from switchboard_runtime.session import AudioOut, GrokRealtimeSession, OutboundEvent
from switchboard_runtime.telephony import DIALECTS
from switchboard_runtime.worker import picows_messages
from switchboard_runtime.worker.media_plane import MediaSocket, Route
from switchboard_runtime.worker.xai_socket import PicowsRealtimeSocket


class Wire:
    """What the sockets touch of picows' transport: what was written, reading paused, the
    close (nothing to close here)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.underlying_transport = self

    def send(self, kind: Any, data: bytes) -> None:
        self.sent.append(data)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def send_close(self, *args: Any) -> None: ...

    def disconnect(self) -> None: ...


class Taker:
    """A `take_now` that takes every message but `must_wait` (as when the call would have to
    wait to send it on)."""

    def __init__(self, must_wait: str) -> None:
        self.must_wait = must_wait
        self.taken: list[str | bytes] = []

    def __call__(self, message: str | bytes) -> bool:
        if message == self.must_wait:
            return False
        self.taken.append(message)
        return True


def phone_socket() -> MediaSocket:
    route = Route("agent", DIALECTS["twilio"], None, 4096)
    socket = MediaSocket(plane=None, route=route)  # type: ignore[arg-type]
    socket.transport = Wire()  # type: ignore[assignment]
    return socket


def parked_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard switched off: the reader counts as parked whatever it is doing."""
    monkeypatch.setattr(
        picows_messages.MessageListener, "reader_parked", staticmethod(lambda *_: True)
    )


async def read_in_order(
    socket: MediaSocket | PicowsRealtimeSocket,
    read: Callable[[], Awaitable[str | bytes | None]],
    queued: Sized,
) -> list[str | bytes | None]:
    """Message 1 is taken in the callback while the reader waits; message 2 is not (the taker
    says it must wait) and wakes the reader; message 3 arrives before the reader has read 2.
    The order the messages were taken or read in."""
    socket.take_now = taker = Taker(must_wait="2")
    reading = asyncio.create_task(read())
    await asyncio.sleep(0)  # the reader is parked
    for message in ("1", "2", "3"):
        socket.on_message(message)
    order: list[str | bytes | None] = [*taker.taken, await reading]
    while queued:
        order.append(await read())
    return order


async def frames_read_by_the_call() -> list[str | bytes | None]:
    socket = phone_socket()
    return await read_in_order(socket, socket.receive, socket.inbox)


async def xai_messages_read_by_the_session() -> list[str | bytes | None]:
    socket = PicowsRealtimeSocket(4096)
    socket.transport = Wire()  # type: ignore[assignment]
    return await read_in_order(socket, socket.recv, socket.messages)


async def test_a_caller_frame_waits_behind_one_the_call_has_not_read_yet() -> None:
    assert await frames_read_by_the_call() == ["1", "2", "3"]


async def test_twin_without_the_guard_a_caller_frame_overtakes_one_still_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parked_always(monkeypatch)
    assert await frames_read_by_the_call() == ["1", "3", "2"]


async def test_an_xai_message_waits_behind_one_the_reader_has_not_read_yet() -> None:
    assert await xai_messages_read_by_the_session() == ["1", "2", "3"]


async def test_twin_without_the_guard_an_xai_message_overtakes_one_still_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parked_always(monkeypatch)
    assert await xai_messages_read_by_the_session() == ["1", "3", "2"]


async def test_nothing_is_taken_while_nobody_reads() -> None:
    socket = phone_socket()
    socket.take_now = lambda message: True
    socket.on_message("1")  # the call is busy elsewhere: not parked in receive()
    assert list(socket.inbox) == ["1"]


def new_session() -> GrokRealtimeSession:
    return GrokRealtimeSession(
        control_plane_url="http://127.0.0.1:9", service_token="t", workspace_id="w", agent_id="a"
    )


async def audio_at_the_phone(session: GrokRealtimeSession) -> list[str]:
    """Delta 1 is played at once while the phone side waits; the phone cannot take delta 2
    without waiting, so it is queued and wakes the player; delta 3 comes before the player has
    played delta 2."""
    phone: list[str] = []

    def play_now(audio: AudioOut) -> bool:
        if audio.payload == "2":
            return False
        phone.append(audio.payload)
        return True

    session.play_now = play_now
    events = session.events()
    playing: asyncio.Future[OutboundEvent] = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)  # the player is parked in events()
    for payload in ("1", "2", "3"):
        session._play(AudioOut(payload))
    played = await playing
    assert isinstance(played, AudioOut)
    phone.append(played.payload)
    while not session._outbound.empty():
        queued = await anext(events)
        assert isinstance(queued, AudioOut)
        phone.append(queued.payload)
    return phone


async def test_agent_audio_waits_behind_audio_the_player_has_not_played_yet() -> None:
    assert await audio_at_the_phone(new_session()) == ["1", "2", "3"]


async def test_twin_without_the_guard_agent_audio_overtakes_audio_still_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(GrokRealtimeSession, "_player_idle", lambda self: True)
    assert await audio_at_the_phone(new_session()) == ["1", "3", "2"]


async def test_caller_audio_in_the_callback_is_held_sent_or_left_to_the_bridge() -> None:
    session = new_session()
    assert session.send_audio_now("AAAA")  # before xAI is ready: held, as send_audio holds it
    assert list(session._held_audio or []) == ["AAAA"]

    session._held_audio = None  # ready; this socket cannot write without waiting
    assert not session.send_audio_now("BBBB")
    assert not session.caller_heard.is_set()

    written: list[str] = []

    def send_now(message: str) -> bool:
        written.append(message)
        return True

    session._send_now = send_now
    assert session.send_audio_now("CCCC")
    assert ['"audio":"CCCC"' in message for message in written] == [True]
    assert session.caller_heard.is_set()

    session._send_now = lambda message: False  # xAI is not reading: the bridge waits to send
    assert not session.send_audio_now("DDDD")


def test_only_a_well_formed_audio_delta_is_taken_from_the_xai_callback() -> None:
    delta = {"type": "response.output_audio.delta", "response_id": "r1", "delta": "f39/fw=="}
    spaced = json.dumps(delta)  # '"type": "…"', with a space
    event = parse_audio_delta(spaced)
    assert event is not None and event.delta == "f39/fw==" and event.response_id == "r1"
    assert parse_audio_delta(spaced.encode()) == event
    transcript = {"type": "response.output_audio_transcript.delta", "delta": "hello"}
    assert parse_audio_delta(json.dumps(transcript)) is None  # for the reader
    assert parse_audio_delta(json.dumps({**delta, "delta": 7})) is None  # invalid: for the reader
    assert parse_audio_delta('{"type": "response.output_audio.delta"') is None  # not JSON


# Values a JSON field can hold, as orjson reads them.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=5,
)
# An event close to an audio delta: each field the check reads may be missing or of any kind.
near_deltas = st.fixed_dictionaries(
    {"type": st.sampled_from([AUDIO_DELTA, "response.output_audio_transcript.delta"])},
    optional={
        name: st.text(max_size=8) | json_values
        for name in ("delta", "response_id", "item_id", "event_id", "output_index")
    },
)


def read_by_the_model(raw: str) -> tuple[str, str | None] | None:
    """What the session's reader takes from the same frame: `AudioDelta`'s validation."""
    data = json.loads(raw)
    if data.get("type") != AUDIO_DELTA:
        return None
    try:
        event = AudioDelta.model_validate(data)
    except ValidationError:
        return None
    return event.delta, event.response_id


@settings(max_examples=400, deadline=None)
@given(near_deltas)
def test_the_callback_takes_an_audio_delta_exactly_when_the_model_does(event: dict) -> None:
    raw = json.dumps(event)
    chunk = parse_audio_delta(raw)
    taken = None if chunk is None else (chunk.delta, chunk.response_id)
    assert taken == read_by_the_model(raw)
    assert parse_audio_delta(raw.encode()) == chunk
