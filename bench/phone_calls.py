"""Scripted Twilio calls: many phones talking through a bridge to the fake xAI, timed both ways.

Whatever bridges the calls (`switchboard worker`, or a pipecat bot per call: bench/peers.py),
the phones are the same: each dials (the bridge's own way: a signed webhook, or nothing), opens
its media stream, sends Twilio's `connected` and `start`, then talks for 0.5 s and sends silence
while the agent's one-second reply plays out in full, over and over. Every 20 ms of audio
carries its send time (tests/fakes/stamps.py); a bridge that re-encodes the audio (pipecat
decodes μ-law to PCM16 and back) keeps it. Agent audio is counted and timed per 20 ms however
the bridge packs it into media frames (pipecat sends 40 ms a frame).
"""

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.phones import open_phone
from tests.fakes import stamps

FRAME_SECONDS = 0.02  # a Twilio media frame carries 20 ms of audio
TALK_FRAMES, REPLY_FRAMES = 25, 50  # 0.5 s of speech; the fake's reply is 1 s
CYCLE_SECONDS = (TALK_FRAMES + REPLY_FRAMES) * FRAME_SECONDS
# Agent frames per caller frame when every reply starts at once: a phone streams through the
# utterance and the reply alike.
SCRIPTED_AGENT_PER_CALLER_FRAME = REPLY_FRAMES / (TALK_FRAMES + REPLY_FRAMES)
# A call that started late (churn) talks this long.
CHURN_SECONDS = 3.0

# A stamped frame is a 9-byte stamp and 151 bytes of μ-law. Base64 encodes 3 bytes at a time,
# so the stamp encodes apart from the body, which never changes: the phones (the instrument)
# build each frame from a constant tail.
_TAILS = {
    talk: base64.b64encode(bytes([stamps.SPEECH if talk else stamps.SILENCE]) * 151).decode()
    for talk in (True, False)
}


def stamped(talk: bool) -> str:
    """A 20 ms μ-law frame carrying its send time; speech or silence, base64."""
    return base64.b64encode(stamps.stamp(time.time())).decode() + _TAILS[talk]


@dataclass(frozen=True)
class Dialled:
    """Where a call's media stream goes, and the `<Parameter>`s its TwiML gave it."""

    stream_url: str
    custom_parameters: dict[str, str] = field(default_factory=dict)


# How a bridge is dialled: (call index, call SID) → where its stream goes, or why it failed.
Dial = Callable[[int, str], Awaitable[Dialled | str]]


@dataclass
class PhoneFigures:
    """What the phones saw. Agent audio is counted in 20 ms frames however it was packed."""

    lags: list[float] = field(default_factory=list)  # xAI sent → at the phone's socket
    read_lags: list[float] = field(default_factory=list)  # … → read by the phone
    agent_frames: int = 0
    agent_frames_expected: int = 0
    caller_frames_sent: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def call_seconds(self) -> float:
        """Seconds of call the phones streamed (a phone sends a frame every 20 ms while it is in
        a call): what a bridge's CPU is divided by. Calls times wall time would count more, since
        calls start talking one after another and hang up between turns."""
        return self.caller_frames_sent * FRAME_SECONDS

    def streamed_share(self, calls: int, wall_seconds: float) -> float:
        """How much of calls times wall time the phones streamed: well under 1 when they fell
        behind (they share a core with the other stand-ins), and the load was less than said."""
        return self.call_seconds / max(1e-9, calls * wall_seconds)


async def every_frame(next_frame: Callable[[float], bool]) -> None:
    """Call `next_frame(now)` every 20 ms (against the clock: a late frame does not delay the
    rest) until it returns False. A loop timer per frame, not a task woken from `asyncio.sleep`:
    at 400 phones that wake-up was a good part of what the phones cost their shared core."""
    loop = asyncio.get_running_loop()
    over = loop.create_future()
    due = loop.time()

    def tick() -> None:
        nonlocal due
        try:
            going = next_frame(loop.time())
        except Exception as exc:  # the call's task fails with it, as it would have inline
            over.set_exception(exc)
            return
        if not going:
            over.set_result(None)
            return
        due += FRAME_SECONDS
        loop.call_at(due, tick)

    tick()
    await over


async def talk(
    dial: Dial,
    calls: int,
    seconds: float,
    *,
    run: int = 0,
    churn: int = 0,
    turns_in_step: bool = False,
    on_all_connected: Callable[[], Awaitable[None]] | None = None,
) -> PhoneFigures:
    """`calls` phones for `seconds` of talk, arriving at 100 a second; once all are connected,
    `on_all_connected` runs (start measuring there), then the talk begins. `churn` more calls of
    CHURN_SECONDS start one after another while the others talk (set-ups and hang-ups beside
    live audio). Returns when every call has hung up."""
    figures = PhoneFigures()
    all_connected = asyncio.Barrier(calls + 1)
    talk_started = asyncio.Event()

    async def one_call(index: int, churn_at: float | None = None) -> None:
        if churn_at is None:
            await asyncio.sleep(index * 0.01)
        else:
            await talk_started.wait()
            await asyncio.sleep(churn_at)
        call_sid = f"CA{run:04d}{index:028d}"
        dialled = await dial(index, call_sid)
        if isinstance(dialled, str):
            figures.failures.append(dialled)
            if churn_at is None:
                await all_connected.wait()
            return
        heard_by_me = [0]

        def heard(raw: str, arrived_at: float) -> None:
            frame = orjson.loads(raw)
            if frame.get("event") != "media":
                return
            audio, read_at = base64.b64decode(frame["media"]["payload"]), time.time()
            for stamped_frame in stamps.frames(audio):
                sent_at = stamps.read_stamp(stamped_frame)
                figures.lags.append(arrived_at - sent_at)
                figures.read_lags.append(read_at - sent_at)
                heard_by_me[0] += 1
                figures.agent_frames += 1

        phone = await open_phone(dialled.stream_url, heard)
        stream_sid = f"MZ{run:04d}{index:028d}"
        start = {
            "streamSid": stream_sid,
            "accountSid": "AC" + "0" * 32,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": dialled.custom_parameters,
        }
        phone.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        phone.send(json.dumps({"event": "start", "streamSid": stream_sid, "start": start}))
        media_prefix = (
            json.dumps({"event": "media", "streamSid": stream_sid, "media": {"track": "inbound"}})[
                :-2
            ]
            + ', "payload": "'
        )
        if churn_at is None:
            await all_connected.wait()
            await talk_started.wait()  # once the measuring has begun
            # Calls are not phase-locked in real life: each starts its first turn at its own
            # point of the talk-and-reply cycle, so turn boundaries (a burst of events per
            # call) spread out. turns_in_step starts every call within one 20 ms frame.
            await asyncio.sleep(index * (FRAME_SECONDS if turns_in_step else CYCLE_SECONDS) / calls)
        utterances, talked = 0, 0
        until = asyncio.get_running_loop().time() + (seconds if churn_at is None else CHURN_SECONDS)

        def next_frame(now: float) -> bool:
            """Send the frame due now; False once the call is over (nothing sent)."""
            nonlocal utterances, talked
            waiting_for_reply = heard_by_me[0] < utterances * REPLY_FRAMES
            # A call ends between turns: an utterance under way is finished, and its reply heard.
            if now >= until and not waiting_for_reply and talked == 0:
                return False
            if now >= until + 5:
                figures.failures.append(f"call {index}: reply incomplete")
                return False
            talking = not waiting_for_reply and (now < until or talked > 0)
            if talking:
                talked += 1
                if talked == TALK_FRAMES:
                    talked, utterances = 0, utterances + 1
            phone.send(media_prefix + stamped(talking) + '"}}')
            figures.caller_frames_sent += 1
            return True

        await every_frame(next_frame)
        figures.agent_frames_expected += utterances * REPLY_FRAMES
        phone.send(json.dumps({"event": "stop", "streamSid": stream_sid}))
        await phone.close()

    tasks = [asyncio.create_task(one_call(i)) for i in range(calls)]
    spread = (seconds - CHURN_SECONDS) / max(1, churn)
    tasks += [asyncio.create_task(one_call(calls + i, i * spread)) for i in range(churn)]
    await all_connected.wait()
    if on_all_connected is not None:
        await on_all_connected()
    talk_started.set()
    await asyncio.gather(*tasks)
    return figures


def delivery(phones: PhoneFigures, fake_stats: dict[str, Any]) -> dict[str, Any]:
    """Frames sent and delivered both ways and their lag, from the phones' figures and the fake
    xAI's /stats."""
    return {
        "failed_calls": phones.failures,
        "agent_frames_sent_by_xai": fake_stats["deltas_sent"],
        "agent_frames_at_phones": phones.agent_frames,
        "caller_frames_sent_by_phones": phones.caller_frames_sent,
        "caller_frames_at_xai": fake_stats["caller_frames"],
        "caller_to_xai_lag_p50_ms": fake_stats["caller_lags_ms"]["0.5"],
        "caller_to_xai_lag_p99_ms": fake_stats["caller_lags_ms"]["0.99"],
        "xai_to_phone_lag_p50_ms": quantile(phones.lags, 0.5) * 1000,
        "xai_to_phone_lag_p99_ms": quantile(phones.lags, 0.99) * 1000,
        # Under 1: replies started late (a phone sends silence while it waits), so the calls
        # carried less agent audio than the script asks; the fake's lateness shapes the load.
        "reply_audio_share": fake_stats["deltas_sent"]
        / max(1, phones.caller_frames_sent)
        / SCRIPTED_AGENT_PER_CALLER_FRAME,
    }


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of the samples; NaN for none (a bridge that delivered nothing)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")
