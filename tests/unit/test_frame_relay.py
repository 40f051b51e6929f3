"""The compiled frame relay (runtime/switchboard_runtime/worker/frame_relay.pyx) takes a frame
only when the Python path would do the same with it at once, and then does exactly that.

Two halves. Reading: whatever bytes arrive, a payload (or delta) the relay reads is the one
the Python path reads from the same frame (`parse_phone_frame`, `events.parse_audio_delta`),
and the relay reads the frames the phones and xAI really send. State: on a call bridged as the
worker bridges it (the real `bridge`, session, and both picows sockets, over wires that record
what is written), a frame in any mix of states leaves the same trace with the relay as without
it: what is written to xAI and to the phone, the counters, the queues, the session's telemetry.
Each half has a twin where a relay that skips a check is caught.
"""

import asyncio
import base64
import collections
import contextlib
import dataclasses
import itertools
import json
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from websockets.frames import Close

from switchboard_runtime import events
from switchboard_runtime.events import AUDIO_DELTA, parse_audio_delta
from switchboard_runtime.protocol import json_string
from switchboard_runtime.session import (
    HELD_AUDIO_FRAMES,
    CallEnded,
    GrokRealtimeSession,
    Transcript,
)
from switchboard_runtime.telephony import (
    DIALECTS,
    BridgeStats,
    Media,
    Start,
    bridge,
    parse_phone_frame,
)
from switchboard_runtime.worker import native_relays
from switchboard_runtime.worker.media_plane import MediaSocket, Route
from switchboard_runtime.worker.native_relays import frame_relay_module, native_frame_relays
from switchboard_runtime.worker.xai_socket import PicowsRealtimeSocket
from tests.unit.test_relay_in_callback import Wire, new_session

frame_relay = frame_relay_module()

PAYLOAD = base64.b64encode(bytes(range(160))).decode()  # 20 ms of μ-law, as a phone sends it
TWILIO_MEDIA = {
    "event": "media",
    "sequenceNumber": "3",
    "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": PAYLOAD},
    "streamSid": "MZ1",
}
TELNYX_MEDIA = {
    "event": "media",
    "sequence_number": "4",
    "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": PAYLOAD},
    "stream_id": "ts-1",
}
DELTA = {
    "type": AUDIO_DELTA,
    "event_id": "event_7",
    "response_id": "resp_1",
    "item_id": "item_1",
    "output_index": 0,
    "content_index": 0,
    "delta": PAYLOAD,
}
TYPICAL = [TWILIO_MEDIA, TELNYX_MEDIA, DELTA]


def test_the_runtime_was_built_with_its_frame_relay() -> None:
    assert frame_relay is not None, "runtime/ was installed without frame_relay.pyx compiled"


def test_a_relay_that_does_not_load_leaves_every_frame_to_python(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Built against another picows, the module fails its import with a ValueError: the worker
    runs on without it and says why, once."""

    def incompatible(name: str) -> types.ModuleType:
        raise ValueError("picows.picows.WSFrame size changed, may indicate binary incompatibility")

    monkeypatch.setattr(native_relays.importlib, "import_module", incompatible)
    assert frame_relay_module() is None
    assert [r.getMessage() for r in caplog.records if r.name == native_relays.__name__] == [
        "no compiled frame relay (picows.picows.WSFrame size changed, may indicate binary "
        "incompatibility): every frame takes the Python path"
    ]


def encoded(frame: Any, *, compact: bool = True) -> bytes:
    return json.dumps(frame, separators=(",", ":") if compact else None).encode()


def python_payload(frame: bytes) -> str | None:
    """The payload the Python path relays from a phone's frame (None: anything else)."""
    try:
        text = frame.decode()
    except UnicodeDecodeError:
        return None  # the socket closes with 1007
    event = parse_phone_frame(text, DIALECTS["twilio"], BridgeStats())
    return event.payload if isinstance(event, Media) else None


def python_delta(frame: bytes) -> tuple[str, str | None] | None:
    """(delta, response id) the Python path plays from xAI's frame (None: anything else)."""
    try:
        text = frame.decode()
    except UnicodeDecodeError:
        return None
    chunk = parse_audio_delta(text)
    return None if chunk is None else (chunk.delta, chunk.response_id or None)


def relay_payload(frame: bytes) -> str | None:
    assert frame_relay is not None
    payload: str | None = frame_relay.caller_payload(frame)
    return payload


def relay_delta(frame: bytes) -> tuple[str, str | None] | None:
    assert frame_relay is not None
    delta: tuple[str, str | None] | None = frame_relay.agent_delta(frame)
    return delta


# --- reading ------------------------------------------------------------------------------------


@pytest.mark.parametrize("compact", [True, False])
def test_the_frames_phones_and_xai_send_are_read(compact: bool) -> None:
    for media in (TWILIO_MEDIA, TELNYX_MEDIA):
        assert relay_payload(encoded(media, compact=compact)) == PAYLOAD
    assert relay_delta(encoded(DELTA, compact=compact)) == (PAYLOAD, "resp_1")
    no_response = {**DELTA, "response_id": None, "item_id": None}
    assert relay_delta(encoded(no_response, compact=compact)) == (PAYLOAD, None)


@given(st.binary(min_size=1, max_size=200))
def test_every_canonical_base64_payload_is_read(audio: bytes) -> None:
    payload = base64.b64encode(audio).decode()
    frame = encoded({**TWILIO_MEDIA, "media": {"payload": payload}})
    assert relay_payload(frame) == python_payload(frame) == payload


# Values a JSON field can hold, and strings close to what the relay looks for.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
payloads = st.text(alphabet='AQZaz09+/=\\"é \x00', max_size=12) | st.sampled_from(
    ["", "QQ==", "QR==", "QUI=", "QUJD", "QUJ=", "=QUJ", "QU==JD", "QUJDRA"]
)
tracks = st.sampled_from(["inbound", "inbound_track", "outbound", "Inbound", "inbound\\u0020"])
near_media = st.fixed_dictionaries(
    {"event": st.sampled_from(["media", "mark", "medi\\u0061"]) | json_values},
    optional={
        "media": st.fixed_dictionaries(
            {},
            optional={
                "track": tracks | json_values,
                "payload": payloads | json_values,
                "chunk": json_values,
            },
        )
        | json_values,
        "streamSid": json_values,
        "sequenceNumber": json_values,
    },
)
near_deltas = st.fixed_dictionaries(
    {"type": st.sampled_from([AUDIO_DELTA, "response.output_audio_transcript.delta"])},
    optional={
        name: st.text(alphabet='AQz09+/=\\"é \x1f', max_size=8) | json_values
        for name in ("delta", "response_id", "item_id", "event_id", "output_index")
    },
)


@st.composite
def rendered(draw: st.DrawFn, objects: st.SearchStrategy[dict[str, Any]]) -> bytes:
    """An object as JSON text: compact or spaced, escaped or not, sometimes with a key twice
    (orjson keeps the last) or a string's backslash left raw (the strategies' `\\u0061`)."""
    frame = draw(objects)
    text = json.dumps(
        frame,
        separators=draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")])),
        ensure_ascii=draw(st.booleans()),
    )
    if draw(st.booleans()):
        text = text.replace("\\\\u", "\\u")  # "medi\u0061": a valid escape for "media"
    if frame and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(frame)))
        again = json.dumps(draw(json_values | payloads | tracks))
        text = text[:-1] + f',"{key}":{again}' + "}"
    return text.encode()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A typical frame with a few bytes deleted, inserted or replaced."""
    frame = bytearray(encoded(draw(st.sampled_from(TYPICAL)), compact=draw(st.booleans())))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(frame) - 1))
        byte = draw(st.sampled_from(b'"\\{}[],:0123456789eE.+- \t\nA=\x00\x7f\xc3'))
        edit = draw(st.sampled_from(["delete", "insert", "replace"]))
        if edit == "delete":
            del frame[at]
        elif edit == "insert":
            frame.insert(at, byte)
        else:
            frame[at] = byte
    return bytes(frame)


caller_frames = rendered(near_media) | mutated()
agent_frames = rendered(near_deltas) | mutated()


@settings(max_examples=1500, deadline=None)
@given(caller_frames)
def test_a_payload_the_relay_reads_is_the_one_the_python_path_reads(frame: bytes) -> None:
    payload = relay_payload(frame)
    if payload is not None:
        assert python_payload(frame) == payload


@settings(max_examples=1500, deadline=None)
@given(agent_frames)
def test_a_delta_the_relay_reads_is_the_one_the_python_path_reads(frame: bytes) -> None:
    delta = relay_delta(frame)
    if delta is not None:
        assert python_delta(frame) == delta
        # Copied as it is into the phone's frame: what the dialect's JSON writes for it.
        assert json_string(delta[0]) == f'"{delta[0]}"'


def scanned_payload(frame: bytes) -> str | None:
    """A relay that finds the payload by scanning, checking neither the JSON nor the base64
    (bench/native_relay.pyx, the benchmarks' floor)."""
    head, found, rest = frame.partition(b'"payload":"')
    value, closed, _ = rest.partition(b'"')
    if not (found and closed and b'"event":"media"' in head + rest):
        return None
    return value.decode(errors="replace")


def test_twin_a_relay_that_only_scans_is_caught() -> None:
    disagrees = find(
        caller_frames,
        lambda frame: (
            (scanned := scanned_payload(frame)) is not None and scanned != python_payload(frame)
        ),
        settings=settings(max_examples=5000, database=None),
    )
    assert scanned_payload(disagrees) != python_payload(disagrees)


# --- state ------------------------------------------------------------------------------------

# What a call's state can be when a frame arrives, each independent of the others.
PHONE_SIDE = {
    "held": "set-up is not over: the caller's audio is held",
    "ended": "the call has ended",
    "heard": "the caller's first frame has gone to xAI",
    "xai_paused": "xAI does not read",
    "xai_closing": "the xAI socket is closing",
    "xai_gone": "the xAI socket is gone",
    "xai_resumed": "xAI stopped reading a while, and reads again",
    "phone_closing": "the phone's socket is closing",
    "phone_queued": "a phone frame waits to be read",
    "no_take_now": "the bridge takes nothing in the callback",
}
AGENT_SIDE = {
    "cancelled": "response resp_1 was cancelled",
    "active": "resp_1 is the active response",
    "first_audio": "the call's first audio was timed",
    "frames_out": "audio has been played to the phone",
    "player_queued": "an event waits for the phone's player",
    "phone_paused": "the phone does not read",
    "phone_gone": "the phone's socket is gone",
    "phone_resumed": "the phone stopped reading a while, and reads again",
    "xai_queued": "an xAI event waits for the session's reader",
    "no_play_now": "the bridge plays nothing in the callback",
}


@dataclasses.dataclass
class Call:
    phone: MediaSocket
    xai: PicowsRealtimeSocket
    session: GrokRealtimeSession
    stats: BridgeStats


async def settle() -> None:
    for _ in range(6):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def bridged(dialect: str, relays: types.ModuleType | None) -> Any:
    """A call bridged as the worker bridges it, both sockets on recording wires."""
    phone = MediaSocket(plane=None, route=Route("agent", DIALECTS[dialect], None, 4096))  # type: ignore[arg-type]
    xai = PicowsRealtimeSocket(4096)
    phone.transport, xai.transport = Wire(), Wire()  # type: ignore[assignment]
    session = new_session()
    session._ws, session._send_now, xai.take_now = xai, xai.send_now, session._take_now
    session._held_audio = None
    session._reader = asyncio.create_task(session._read_forever())
    stats = BridgeStats()
    start = Start("MZ1", "CA1", {})
    with native_frame_relays(relays, phone, DIALECTS[dialect], start, session, stats):
        bridging = asyncio.create_task(bridge(phone, DIALECTS[dialect], start, session, stats))
        await settle()
        try:
            yield Call(phone, xai, session, stats)
        finally:
            # The call's tasks (the bridge's, the session's reader): whatever state the test
            # left them in, cancelled rather than ended, which could take a timeout's wait.
            for task in {bridging, *asyncio.all_tasks()} - {asyncio.current_task()}:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


def put_in_state(call: Call, state: set[str]) -> None:
    session, phone, xai = call.session, call.phone, call.xai
    changes: dict[str, Callable[[], object]] = {
        "held": lambda: setattr(
            session, "_held_audio", collections.deque(maxlen=HELD_AUDIO_FRAMES)
        ),
        "ended": lambda: setattr(session, "ended", CallEnded("hung_up")),
        "heard": session.caller_heard.set,
        "xai_paused": xai.pause_writing,
        "xai_closing": lambda: setattr(xai, "close_sent", Close(1000, "")),
        "xai_gone": lambda: setattr(xai, "disconnected", True),
        "xai_resumed": lambda: (xai.pause_writing(), xai.resume_writing()),
        "phone_closing": lambda: setattr(phone, "close_sent", True),
        "phone_queued": lambda: phone.inbox.append('{"event":"mark","mark":{"name":"m"}}'),
        "no_take_now": lambda: setattr(phone, "take_now", None),
        "cancelled": lambda: session._cancelled.add("resp_1"),
        "active": lambda: setattr(session, "_active_response", "resp_1"),
        "first_audio": lambda: setattr(session.telemetry, "time_to_first_audio_ms", 5.0),
        "frames_out": lambda: setattr(call.stats, "frames_out", 3),
        "player_queued": lambda: session._outbound.put_nowait(Transcript("agent", "hi")),
        "phone_paused": phone.pause_writing,
        "phone_gone": lambda: setattr(phone, "disconnected", True),
        "phone_resumed": lambda: (phone.pause_writing(), phone.resume_writing()),
        "xai_queued": lambda: xai.messages.append('{"type":"session.updated"}'),
        "no_play_now": lambda: setattr(session, "play_now", None),
    }
    for name in sorted(state):
        changes[name]()


def deliver(socket: MediaSocket | PicowsRealtimeSocket, frame: bytes) -> bool:
    """picows' frame callback with a whole text frame: the relay first, then the Python path
    (`read_data_frame` of a whole text frame within bounds). Whether the relay took it."""
    if socket.native is not None and socket.native.relay_text(frame):  # type: ignore[attr-defined]
        return True
    socket._message(frame, text=True)
    return False


def trace(call: Call) -> dict[str, Any]:
    """Everything a frame can change, with times left out (they differ from run to run)."""
    session, telemetry = call.session, call.session.telemetry
    return {
        "to xAI": [json.loads(sent) for sent in call.xai.transport.sent],  # type: ignore[union-attr]
        "to the phone": call.phone.transport.sent,  # type: ignore[union-attr]
        "stats": dataclasses.asdict(call.stats),
        "phone frames waiting": list(call.phone.inbox),
        "xAI events waiting": list(call.xai.messages),
        "for the player": [
            (type(event).__name__, getattr(event, "payload", None))
            for event in session._outbound._queue  # type: ignore[attr-defined]
        ],
        "held": None if session._held_audio is None else list(session._held_audio),
        "heard": session.caller_heard.is_set(),
        "audio since clear": session._audio_since_clear,
        "first audio timed": telemetry.time_to_first_audio_ms is not None,
        "first relay timed": telemetry.first_audio_relay_ms is not None,
        "telemetry": telemetry.model_dump(
            exclude={"started_at", "time_to_first_audio_ms", "first_audio_relay_ms", "duration_ms"}
        ),
    }


@contextlib.contextmanager
def event_ids_from_one() -> Iterator[None]:
    """Both paths number their appends from a fresh counter."""
    original = events.EVENT_IDS
    events.EVENT_IDS = itertools.count(1)
    try:
        yield
    finally:
        events.EVENT_IDS = original


async def run(
    dialect: str, relays: types.ModuleType | None, state: set[str], frame: bytes, side: str
) -> tuple[dict[str, Any], bool]:
    """The trace a frame leaves on a call in `state`, and whether the relay took it."""
    with event_ids_from_one():
        async with bridged(dialect, relays) as call:
            put_in_state(call, state)
            taken = deliver(call.phone if side == "caller" else call.xai, frame)
            await settle()
            return trace(call), taken


async def same_trace(
    dialect: str, state: set[str], frame: bytes, side: str, relays: Any = None
) -> bool:
    """Whether the frame leaves the same trace with the relays as without them (asserted);
    whether they took it."""
    with_relays, taken = await run(dialect, relays or frame_relay, state, frame, side)
    without, _ = await run(dialect, None, state, frame, side)
    assert with_relays == without
    return taken


CALLER_FRAMES = [
    encoded(TWILIO_MEDIA),
    encoded(TELNYX_MEDIA, compact=False),
    encoded({**TWILIO_MEDIA, "media": {"track": "outbound", "payload": PAYLOAD}}),
    encoded({**TWILIO_MEDIA, "media": {"payload": "QUJ"}}),
    encoded({"event": "mark", "mark": {"name": "response-1"}}),
    encoded({"event": "stop"}),
    b'{"event":"media","media":{"payload":"QUJD"},}',
]
AGENT_FRAMES = [
    encoded(DELTA),
    encoded({**DELTA, "response_id": "resp_2"}, compact=False),
    encoded({**DELTA, "response_id": None}),
    encoded({**DELTA, "response_id": ""}),
    encoded({**DELTA, "delta": 7}),
    encoded({"type": "response.output_audio_transcript.delta", "delta": "hi"}),
    b'{"type":"response.output_audio.delta","delta":"QUJD"',
]


SIDES = {"caller": (PHONE_SIDE, CALLER_FRAMES), "agent": (AGENT_SIDE, AGENT_FRAMES)}


@pytest.mark.parametrize("side", sorted(SIDES))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_frame_leaves_the_same_trace_with_the_relay(side: str, data: st.DataObject) -> None:
    states, frames = SIDES[side]
    dialect = data.draw(st.sampled_from(sorted(DIALECTS)), label="dialect")
    state = data.draw(st.sets(st.sampled_from(sorted(states))), label="state")
    frame = data.draw(st.sampled_from(frames), label="frame")
    asyncio.run(same_trace(dialect, state, frame, side))


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
async def test_a_call_in_full_swing_relays_both_ways_in_compiled_code(dialect: str) -> None:
    """Not a vacuous equality: in the state most frames of a call find, the relays take them."""
    media = encoded(TWILIO_MEDIA if dialect == "twilio" else TELNYX_MEDIA)
    assert await same_trace(dialect, {"heard"}, media, "caller")
    agent_state = {"first_audio", "frames_out", "active"}
    assert await same_trace(dialect, agent_state, encoded(DELTA), "agent")
    assert await same_trace(dialect, agent_state, encoded({**DELTA, "response_id": None}), "agent")
    async with bridged(dialect, frame_relay) as call:
        put_in_state(call, {"heard", "first_audio", "frames_out"})
        assert deliver(call.phone, media) and deliver(call.xai, encoded(DELTA))
        assert call.phone.native.relayed == call.xai.native.relayed == 1  # type: ignore[union-attr]
        sent = call.phone.transport.sent[-1]  # type: ignore[union-attr]
        assert sent == DIALECTS[dialect].media("MZ1", PAYLOAD).encode()


@pytest.mark.parametrize("side", ["caller", "agent"])
async def test_a_frame_the_socket_must_refuse_is_left_to_the_python_path(side: str) -> None:
    """A frame inside a fragmented message (1002) or over the socket's bound (1009) is the
    socket's to refuse: the relay does not take it."""
    frame = encoded(TWILIO_MEDIA if side == "caller" else DELTA)
    async with bridged("twilio", frame_relay) as call:
        put_in_state(call, {"heard", "first_audio", "frames_out"})
        socket = call.phone if side == "caller" else call.xai
        assert socket.native is not None
        socket.fragments = bytearray(b"{")
        assert not socket.native.relay_text(frame)  # type: ignore[attr-defined]
        socket.fragments, socket.max_message_bytes = None, len(frame) - 1
        assert not socket.native.relay_text(frame)  # type: ignore[attr-defined]
        socket.max_message_bytes = len(frame)
        assert socket.native.relay_text(frame)  # type: ignore[attr-defined]


class PlaysEveryDelta:
    """A relay that forgets one check: a delta of a cancelled response is played too."""

    def __init__(
        self, phone: MediaSocket, xai: Any, session: Any, stats: BridgeStats, *parts: bytes
    ) -> None:
        self.phone, self.session, self.stats, self.parts = phone, session, stats, parts

    def relay_text(self, frame: bytes) -> bool:
        delta = relay_delta(frame)
        if delta is None:
            return False
        head, tail = self.parts
        self.session._audio_since_clear = True
        self.phone.transport.send(None, head + delta[0].encode() + tail)  # type: ignore[union-attr]
        self.stats.frames_out += 1
        return True


async def test_twin_a_relay_that_plays_a_cancelled_response_is_caught() -> None:
    lax = types.SimpleNamespace(CallerAudio=lambda *args: None, AgentAudio=PlaysEveryDelta)
    state = {"cancelled", "first_audio", "frames_out"}
    with pytest.raises(AssertionError):
        await same_trace("twilio", state, encoded(DELTA), "agent", relays=lax)
    # Where the session would play the delta anyway, the lax relay leaves the same trace.
    await same_trace("twilio", state - {"cancelled"}, encoded(DELTA), "agent", relays=lax)


def test_a_dialect_whose_frame_does_not_wrap_the_payload_gets_no_agent_relay() -> None:
    class Reversed:
        name = "reversed"

        def media(self, stream_id: str, payload: str) -> str:
            return json.dumps({"payload": payload[::-1]})

    assert native_relays.media_frame_parts(Reversed(), "MZ1") is None  # type: ignore[arg-type]
    head, tail = native_relays.media_frame_parts(DIALECTS["twilio"], 'M"Z\\1') or (b"", b"")
    assert head + b"QUJD" + tail == DIALECTS["twilio"].media('M"Z\\1', "QUJD").encode()
