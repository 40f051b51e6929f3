"""The bridge reads whatever a phone socket gives it, whichever server carries the socket: a
bad frame is skipped and counted, never the end of the call. (Under `switchboard worker` the
server refuses frames past its own, smaller bound before they are read: test_worker_frames.)"""

import base64
import binascii
import json
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard_runtime import telephony
from switchboard_runtime.telephony import (
    DIALECTS,
    BridgeStats,
    Ignored,
    Media,
    read_phone_event,
)

GOOD_MEDIA = json.dumps({"event": "media", "media": {"payload": "f39/fw=="}})


class ScriptedPhone:
    def __init__(self, *frames: str | bytes) -> None:
        self.frames = deque(frames)

    async def receive(self) -> str | bytes | None:
        return self.frames.popleft() if self.frames else None

    async def send_text(self, text: str) -> None:
        raise AssertionError("the phone is only read here")


BAD_FRAMES: list[tuple[str | bytes, str]] = [
    ("{not json", "not JSON"),
    ("[1, 2]", "not an object"),
    (b"\x00\x01", "binary frame"),
    (json.dumps({"event": "media", "media": {"payload": "***not base64***"}}), "base64"),
    (json.dumps({"event": "media", "media": {"payload": "A" * 70_000}}), "oversized frame"),
]


@pytest.mark.parametrize(("frame", "why"), BAD_FRAMES)
async def test_a_bad_frame_is_skipped_and_the_next_one_is_read(
    frame: str | bytes, why: str
) -> None:
    phone, stats = ScriptedPhone(frame, GOOD_MEDIA), BridgeStats()
    skipped = await read_phone_event(phone, DIALECTS["twilio"], stats)
    assert isinstance(skipped, Ignored) and why in skipped.why
    assert await read_phone_event(phone, DIALECTS["twilio"], stats) == Media("f39/fw==")
    assert stats.ignored == 1


async def test_without_the_bound_an_oversized_frame_is_parsed_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(telephony, "MAX_FRAME_BYTES", 1024 * 1024)
    huge = json.dumps({"event": "media", "media": {"payload": "A" * 70_000}})
    event = await read_phone_event(ScriptedPhone(huge), DIALECTS["twilio"], BridgeStats())
    assert event == Media("A" * 70_000)  # 52 KB of "audio" would have gone on to xAI


def accepted_by_b64decode(payload: str) -> bool:
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet="AZaz09+/=-_ \né", min_size=1, max_size=12))
def test_a_payload_is_taken_exactly_when_b64decode_validates_it(payload: str) -> None:
    frame = json.dumps({"event": "media", "media": {"payload": payload}})
    event = telephony.parse_phone_frame(frame, DIALECTS["twilio"], BridgeStats())
    assert isinstance(event, Media) is accepted_by_b64decode(payload)
