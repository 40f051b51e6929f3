"""A phone that sends `stop` and closes its socket at once ends its call as `phone_stop`, even
when the agent's audio finds the socket gone before the bridge has read that stop: the reader,
not the failed send, says how the call ended. (Seen in CI: a media-plane call reported as
`caller_hangup` after a clean stop.) Beside its twin, with no time for the reader."""

import asyncio
import json

import pytest

from switchboard_runtime import telephony
from switchboard_runtime.session import AudioOut, GrokRealtimeSession
from switchboard_runtime.telephony import DIALECTS, PhoneGone, Start, bridge

STOP = json.dumps({"event": "stop", "stop": {"callSid": "CA1"}})


class ClosedAfterStop:
    """A phone whose `stop` is still on its way to the reader when the first send to it fails."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.frames = [STOP]

    async def receive(self) -> str | bytes | None:
        await self.gone.wait()
        return self.frames.pop(0) if self.frames else None

    async def send_text(self, text: str) -> None:
        self.gone.set()  # the socket closed after the stop arrived
        raise PhoneGone


async def end_reason() -> str | None:
    session = GrokRealtimeSession(
        control_plane_url="http://127.0.0.1:9", service_token="t", workspace_id="w", agent_id="a"
    )
    start = Start(stream_id="MZ1", call_id="CA1", parameters={})
    bridged = asyncio.ensure_future(bridge(ClosedAfterStop(), DIALECTS["twilio"], start, session))
    await asyncio.sleep(0)  # both directions running: the reader waits for the phone
    session._play(AudioOut("AAAA"))  # the agent speaks: its send finds the socket gone
    async with asyncio.timeout(5):
        await bridged
    return session.telemetry.end_reason


async def test_a_stop_before_the_close_ends_the_call_as_phone_stop() -> None:
    assert await end_reason() == "phone_stop"


async def test_twin_without_time_for_the_reader_the_failed_send_calls_it_a_hang_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_last_word(reader: asyncio.Task[None]) -> None:
        return None

    monkeypatch.setattr(telephony, "reader_last_word", no_last_word)
    assert await end_reason() == "caller_hangup"
