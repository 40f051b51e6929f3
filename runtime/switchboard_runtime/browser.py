"""Browser test calls: PCM16 mono at 24 kHz both ways, bridged to a realtime session.

The agent page captures the microphone with an AudioWorklet and sends binary frames of
little-endian 16-bit samples at 24 kHz; they go to xAI as `audio/pcm` at that rate (base64 on
xAI's socket, no resampling here), and xAI's audio comes back the same way. Text frames carry
the rest, JSON with a `type`:

    browser → worker   start {token}          first, within the start timeout
                       stop                   hang up
    worker → browser   ready {audio}          the session is set up: talk
                       transcript {role, text}
                       clear                  the caller talks over the agent: drop playback
                       first_audio {ms}       xAI's part of the first answer
                       ended {reason, detail}
                       error {code, message}  the call could not start (shown on the page)
"""

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from switchboard_runtime.session import (
    AudioOut,
    CallEnded,
    ClearAudio,
    GrokRealtimeSession,
    Transcript,
)
from switchboard_runtime.telephony import PhoneGone

logger = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
AUDIO_FORMAT = {"format": "audio/pcm", "rate": SAMPLE_RATE}
# A frame is normally 20 ms (960 bytes); more than a second in one frame is not a microphone.
MAX_AUDIO_FRAME_BYTES = 2 * SAMPLE_RATE
MAX_TEXT_FRAME_CHARS = 4096


class BrowserSocket(Protocol):
    async def receive(self) -> str | bytes | None:
        """The next frame, text or binary; None once the browser has gone."""
        ...

    async def send_text(self, text: str) -> None:
        """Raises PhoneGone when the browser has gone."""
        ...

    async def send_bytes(self, data: bytes) -> None:
        """Raises PhoneGone when the browser has gone."""
        ...


@dataclass
class BrowserStats:
    frames_in: int = 0
    frames_out: int = 0
    ignored: int = 0


def message(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


def _control(text: str) -> dict[str, Any] | None:
    if len(text) > MAX_TEXT_FRAME_CHARS:
        return None
    try:
        frame = json.loads(text)
    except ValueError:
        return None
    return frame if isinstance(frame, dict) and isinstance(frame.get("type"), str) else None


async def wait_for_token(browser: BrowserSocket) -> str | None:
    """The token of the browser's `start` message; None when it leaves or says something else."""
    frame = await browser.receive()
    control = _control(frame) if isinstance(frame, str) else None
    token = control.get("token") if control and control["type"] == "start" else None
    return token if isinstance(token, str) and 0 < len(token) <= 1024 else None


async def bridge_browser(browser: BrowserSocket, session: GrokRealtimeSession) -> BrowserStats:
    """Move audio both ways until either side ends the call. The session is already open."""
    stats = BrowserStats()

    async def browser_to_grok() -> None:
        while True:
            frame = await browser.receive()
            if frame is None:
                await session.hangup("caller_hangup")
                return
            if isinstance(frame, bytes):
                if not frame or len(frame) % 2 or len(frame) > MAX_AUDIO_FRAME_BYTES:
                    stats.ignored += 1  # not whole 16-bit samples, or not a microphone's frame
                    continue
                stats.frames_in += 1
                await session.send_audio(base64.b64encode(frame).decode("ascii"))
                continue
            control = _control(frame)
            if control is not None and control["type"] == "stop":
                await session.hangup("caller_hangup")
                return
            stats.ignored += 1

    async def grok_to_browser() -> None:
        try:
            await play_to_browser()
        except PhoneGone:
            await session.hangup("caller_hangup")

    async def play_to_browser() -> None:
        async for event in session.events():
            if isinstance(event, AudioOut):
                try:
                    audio = base64.b64decode(event.payload, validate=True)
                except (binascii.Error, ValueError):
                    stats.ignored += 1
                    continue
                await browser.send_bytes(audio)
                stats.frames_out += 1
                if stats.frames_out == 1:
                    await browser.send_text(
                        message("first_audio", ms=session.telemetry.time_to_first_audio_ms)
                    )
            elif isinstance(event, ClearAudio):
                await browser.send_text(message("clear"))
            elif isinstance(event, Transcript):
                await browser.send_text(message("transcript", role=event.role, text=event.text))
            elif isinstance(event, CallEnded):
                await browser.send_text(message("ended", reason=event.reason, detail=event.detail))
                return

    inbound = asyncio.create_task(browser_to_grok())
    outbound = asyncio.create_task(grok_to_browser())
    done, pending = await asyncio.wait({inbound, outbound}, return_when=asyncio.FIRST_COMPLETED)
    if inbound in done and not outbound.done():
        # The caller hung up: the session ends and the page still hears how.
        with contextlib.suppress(TimeoutError, PhoneGone):
            await asyncio.wait_for(outbound, timeout=2)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in (inbound, outbound):
        if task.done() and not task.cancelled() and task.exception() is not None:
            logger.warning("browser bridge task failed: %r", task.exception())
    return stats
