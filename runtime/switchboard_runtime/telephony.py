"""Twilio Media Streams and Telnyx media streaming, bridged to a realtime session.

Phone audio is G.711 μ-law at 8 kHz and Grok takes `audio/pcmu`, so payloads cross untouched
in both directions: no decode, no resample, no re-encode. Each provider is a dialect (how to read
its frames, how to write media/clear/mark back); the bridge itself is shared.
"""

import asyncio
import binascii
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import orjson

from switchboard_runtime.session import (
    AudioDone,
    AudioOut,
    CallEnded,
    ClearAudio,
    GrokRealtimeSession,
    Transcript,
)

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024


# Once a send finds the phone's socket gone, how long the reader has to read what the phone
# sent before it went (a `stop` there ends the call as phone_stop, not as a hang-up).
GONE_READ_SECONDS = 1.0


async def reader_last_word(reader: "asyncio.Task[None]") -> None:
    """The phone's socket is gone, but a `stop` it sent just before closing may still be waiting
    for the reader: the reader, not the send that failed, says how the call ended."""
    await asyncio.wait({reader}, timeout=GONE_READ_SECONDS)


class PhoneGone(Exception):
    """The phone's socket closed while we were sending to it: the caller hung up."""


class PhoneSocket(Protocol):
    """The phone side of a call, whatever server carries it (the worker adapts Starlette's)."""

    async def receive(self) -> str | bytes | None:
        """The next frame, text or binary; None once the phone has hung up."""
        ...

    async def send_text(self, text: str) -> None:
        """Send one frame; raises PhoneGone when the phone has hung up."""
        ...


@runtime_checkable
class CallbackPhone(PhoneSocket, Protocol):
    """A phone socket that relays in its frame callback (the worker's media plane): it hands a
    frame to `take_now` while the bridge waits for one, and writes without waiting when the
    phone is reading (`send_text_now`: False, nothing written, otherwise)."""

    take_now: Callable[[str | bytes], bool] | None

    def send_text_now(self, text: str) -> bool: ...


@dataclass(frozen=True)
class Start:
    stream_id: str
    call_id: str
    parameters: dict[str, str]


@dataclass(frozen=True)
class Media:
    payload: str


@dataclass(frozen=True)
class Mark:
    name: str


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Ignored:
    why: str


PhoneEvent = Start | Media | Mark | Stop | Ignored


class Dialect(Protocol):
    """How to read a provider's frames, and its frames to send back as JSON text."""

    name: str

    def parse(self, frame: dict[str, Any]) -> PhoneEvent: ...

    def media(self, stream_id: str, payload: str) -> str: ...

    def clear(self, stream_id: str) -> str: ...

    def mark(self, stream_id: str, name: str) -> str | None: ...


# JSON string literal of a str (what json.dumps writes for one).
_json_string = json.encoder.encode_basestring


def _media_payload(frame: dict[str, Any]) -> PhoneEvent:
    media = frame.get("media")
    if not isinstance(media, dict):
        return Ignored("media frame without media")
    if media.get("track", "inbound") not in ("inbound", "inbound_track"):
        return Ignored("not the caller's track")
    payload = media.get("payload")
    if not isinstance(payload, str) or not payload:
        return Ignored("media frame without payload")
    try:
        # What `base64.b64decode(validate=True)` accepts, checked in C alone (its regex and
        # copy cost a third more, 50 times a second per call); a unit test holds the two equal.
        binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        return Ignored("payload is not valid base64")
    return Media(payload)


def _parameters(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


class _MediaStream:
    """What Twilio's and Telnyx's streams share: media, mark and stop frames; `start` differs."""

    def parse(self, frame: dict[str, Any]) -> PhoneEvent:
        event = frame.get("event")
        if event == "media":
            return _media_payload(frame)
        if event == "start":
            return self.start(frame, frame.get("start") or {})
        if event == "mark":
            return Mark(str((frame.get("mark") or {}).get("name", "")))
        if event == "stop":
            return Stop()
        return Ignored(f"event {str(event)[:32]!r}")

    def start(self, frame: dict[str, Any], start: dict[str, Any]) -> Start:
        raise NotImplementedError


class Twilio(_MediaStream):
    name = "twilio"

    def start(self, frame: dict[str, Any], start: dict[str, Any]) -> Start:
        return Start(
            stream_id=str(frame.get("streamSid") or start.get("streamSid") or ""),
            call_id=str(start.get("callSid") or ""),
            parameters=_parameters(start.get("customParameters")),
        )

    def media(self, stream_id: str, payload: str) -> str:
        # Written out rather than json.dumps'd: 50 frames a second per call, 5x cheaper.
        return (
            f'{{"event":"media","streamSid":{_json_string(stream_id)},'
            f'"media":{{"payload":{_json_string(payload)}}}}}'
        )

    def clear(self, stream_id: str) -> str:
        return json.dumps({"event": "clear", "streamSid": stream_id})

    def mark(self, stream_id: str, name: str) -> str | None:
        return json.dumps({"event": "mark", "streamSid": stream_id, "mark": {"name": name}})


class Telnyx(_MediaStream):
    name = "telnyx"

    def start(self, frame: dict[str, Any], start: dict[str, Any]) -> Start:
        return Start(
            stream_id=str(frame.get("stream_id") or ""),
            call_id=str(start.get("call_control_id") or ""),
            parameters=_parameters(start.get("custom_parameters") or start.get("customParameters")),
        )

    def media(self, stream_id: str, payload: str) -> str:
        return f'{{"event":"media","media":{{"payload":{_json_string(payload)}}}}}'

    def clear(self, stream_id: str) -> str:
        return '{"event":"clear"}'

    def mark(self, stream_id: str, name: str) -> str | None:
        return None  # Telnyx's bidirectional stream documents media and clear only


DIALECTS: dict[str, Dialect] = {"twilio": Twilio(), "telnyx": Telnyx()}


@dataclass
class BridgeStats:
    frames_in: int = 0
    frames_out: int = 0
    ignored: int = 0
    marks_played: list[str] = field(default_factory=list)


async def read_phone_event(
    phone: PhoneSocket, dialect: Dialect, stats: BridgeStats
) -> PhoneEvent | None:
    """The next phone event; None when the phone hung up. Bad frames are skipped, not fatal."""
    text = await phone.receive()
    if text is None:
        return None
    return parse_phone_frame(text, dialect, stats)


def parse_phone_frame(text: str | bytes, dialect: Dialect, stats: BridgeStats) -> PhoneEvent:
    if isinstance(text, bytes):  # phone media streams speak JSON text only
        stats.ignored += 1
        return Ignored("binary frame")
    if len(text) > MAX_FRAME_BYTES:
        stats.ignored += 1
        return Ignored("oversized frame")
    try:
        frame = orjson.loads(text)  # a media frame 50 times a second: 4x faster than json
    except orjson.JSONDecodeError:
        stats.ignored += 1
        return Ignored("not JSON")
    if not isinstance(frame, dict):
        stats.ignored += 1
        return Ignored("not an object")
    event = dialect.parse(frame)
    if isinstance(event, Ignored):
        stats.ignored += 1
    return event


async def wait_for_start(phone: PhoneSocket, dialect: Dialect, stats: BridgeStats) -> Start | None:
    while True:
        event = await read_phone_event(phone, dialect, stats)
        if event is None or isinstance(event, Stop):
            return None
        if isinstance(event, Start):
            return event


async def bridge(
    phone: PhoneSocket,
    dialect: Dialect,
    start: Start,
    session: GrokRealtimeSession,
    stats: BridgeStats | None = None,
) -> BridgeStats:
    """Move audio both ways until either side ends the call, counted in `stats` (new ones
    unless given). The session is already open."""
    if stats is None:
        stats = BridgeStats()
    marks = 0
    callback_phone = phone if isinstance(phone, CallbackPhone) else None

    async def phone_to_grok() -> None:
        while True:
            event = await read_phone_event(phone, dialect, stats)
            if event is None or isinstance(event, Stop):
                await session.hangup("caller_hangup" if event is None else "phone_stop")
                return
            if isinstance(event, Media):
                stats.frames_in += 1
                await session.send_audio(event.payload)
            elif isinstance(event, Mark):
                stats.marks_played.append(event.name)

    def caller_frame_now(text: str | bytes) -> bool:
        """What phone_to_grok does with a frame, done in the socket's frame callback when no
        wait is needed; anything else (a stop, xAI not reading) is left to it (False)."""
        event = parse_phone_frame(text, dialect, stats)
        if isinstance(event, Media):
            if not session.send_audio_now(event.payload):
                return False  # phone_to_grok parses it again and waits to send it
            stats.frames_in += 1
        elif isinstance(event, Mark):
            stats.marks_played.append(event.name)
        elif not isinstance(event, Ignored):  # counted already
            return False
        return True

    def played(audio: AudioOut) -> None:
        stats.frames_out += 1
        if stats.frames_out == 1 and audio.received_at:
            relay = (time.monotonic() - audio.received_at) * 1000
            session.telemetry.first_audio_relay_ms = round(relay, 2)

    def play_now(audio: AudioOut) -> bool:
        assert callback_phone is not None
        if not callback_phone.send_text_now(dialect.media(start.stream_id, audio.payload)):
            return False
        played(audio)
        return True

    async def grok_to_phone() -> None:
        try:
            await play_to_phone()
        except PhoneGone:
            await reader_last_word(inbound)
            await session.hangup("caller_hangup")

    async def play_to_phone() -> None:
        nonlocal marks
        async for event in session.events():
            if isinstance(event, AudioOut):
                await phone.send_text(dialect.media(start.stream_id, event.payload))
                played(event)
            elif isinstance(event, ClearAudio):
                await phone.send_text(dialect.clear(start.stream_id))
            elif isinstance(event, AudioDone):
                marks += 1
                mark = dialect.mark(start.stream_id, f"response-{marks}")
                if mark is not None:
                    await phone.send_text(mark)
            elif isinstance(event, Transcript):
                logger.debug("%s: %s", event.role, event.text)
            elif isinstance(event, CallEnded):
                return

    # Where the sockets can, a frame that needs no wait is relayed inside the socket's frame
    # callback, both ways: no task wakes for it (two fewer wake-ups per frame).
    if callback_phone is not None:
        callback_phone.take_now = caller_frame_now
        session.play_now = play_now
    inbound = asyncio.create_task(phone_to_grok())
    outbound = asyncio.create_task(grok_to_phone())
    try:
        done, pending = await asyncio.wait({inbound, outbound}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if callback_phone is not None:
            callback_phone.take_now = None
            session.play_now = None
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            logger.warning("bridge task failed: %r", task.exception())
    return stats
