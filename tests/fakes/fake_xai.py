"""A fake xAI API on loopback, for tests and benchmarks: the real one is out of reach here.

HTTP: `GET /v1/api-key` (key check) and `POST /v1/realtime/client_secrets` (ephemeral secrets,
which expire: a connection with an expired one is refused).
WebSocket: `/v1/realtime?model=...`, speaking the documented protocol with its quirks:
`session.created` (optionally) and `conversation.created` before `session.updated`, `ping`
events during the call, a validator that answers a malformed `session.update` with an `error`,
function calls as `response.function_call_arguments.done` (optionally streamed as `.delta`s
first), only inside `response.done`, or several in one response, `response.done` with status
`cancelled`/`failed`/`incomplete`, audio still in flight after a cancel, a cancel of a response
that already finished answered with `response_cancel_not_active`, a server-side cancel when the
caller talks over the agent, fatal and non-fatal `error`s, HTTP 429/503 on the upgrade and on
client secrets, and a close at its session limit. Behaviour is scripted through FakeXAIState;
every connection records what it received and sent.

A caller "utterance" is `frames_per_utterance` appended audio frames (for PCM16 from a browser,
loud frames up to the first quiet one): the fake then plays server VAD (speech_started/stopped,
committed, the caller's transcript) and answers with a response:
audio deltas (the bytes in `reply_audio`, paced by `delta_interval`), the agent's transcript, or
tool calls first when the turn is scripted for them.
"""

import array
import asyncio
import base64
import contextlib
import json
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from switchboard_runtime.loop_lag import LoopLagMonitor
from tests.fakes import stamps

VOICES = {"ara", "rex", "sal", "eve", "leo"}
# The smallest session.update the fake (like xAI) accepts: μ-law both ways, server VAD, no tools.
MINIMAL_SESSION: dict[str, Any] = {
    "instructions": "x",
    "voice": "Ara",
    "turn_detection": {"type": "server_vad"},
    "audio": {
        "input": {"format": {"type": "audio/pcmu"}},
        "output": {"format": {"type": "audio/pcmu"}},
    },
    "tools": [],
}
AUDIO_TYPES = {"audio/pcm", "audio/pcmu", "audio/pcma"}
# audio/pcm rates as xAI's documentation (21050) and pipecat's models (11025, 22050) list them.
PCM_RATES = {8000, 11025, 16000, 21050, 22050, 24000, 32000, 44100, 48000}


@dataclass
class ToolTurn:
    name: str
    arguments: dict[str, Any]
    # "arguments_done": response.function_call_arguments.done and response.done;
    # "streamed": .delta events carry the arguments, then .done with them, then response.done;
    # "streamed_bare_done": the same, but .done carries neither arguments nor response id;
    # "response_done_only": the call appears only inside response.done's output.
    style: str = "arguments_done"


@dataclass
class Connection:
    model: str
    authorization: str
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    closed_by_fake: str | None = None
    closed: bool = False  # the conversation is over (either side closed)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e.get("type") == kind]

    def sent_of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.sent if e.get("type") == kind]


@dataclass
class FakeXAIState:
    accepted_keys: set[str] = field(default_factory=set)
    secrets_minted: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    http_delay: float = 0.0
    secret_ttl_seconds: int | None = None  # overrides what the client asks for
    # HTTP statuses to answer the next client-secret requests / WebSocket upgrades with.
    secret_failures: list[int] = field(default_factory=list)
    upgrade_failures: list[int] = field(default_factory=list)
    upgrade_attempts: int = 0
    # Realtime behaviour.
    session_created_first: bool = False
    ping_interval: float | None = None
    frames_per_utterance: int = 5
    reply_audio: list[bytes] = field(
        default_factory=lambda: [bytes([i]) * 160 for i in range(1, 6)]
    )
    delta_interval: float = 0.0
    caller_transcripts: list[str] = field(default_factory=lambda: ["Hello, where is my order?"])
    agent_transcript: str = "Let me check that for you."
    # utterance index → the tool calls of that turn's response (several run in one response).
    tool_turns: dict[int, ToolTurn | list[ToolTurn]] = field(default_factory=dict)
    # utterance index → an `error` event's `error` object, sent instead of the response.
    errors_on_utterance: dict[int, dict[str, Any]] = field(default_factory=dict)
    close_after_error: int | None = None  # close code to close with after a scripted error
    # utterance index → the final status of that turn's response (failed, incomplete, ...).
    response_status_on_utterance: dict[int, str] = field(default_factory=dict)
    drop_on_utterance: int | None = None
    audio_after_cancel: int = 0  # deltas of a cancelled response still sent after the cancel
    server_cancel_on_speech: bool = False  # xAI cancels a response itself when the caller talks
    session_limit_seconds: float | None = None
    send_unknown_events: bool = True
    handshake_delay: float = 0.0
    connections: list[Connection] = field(default_factory=list)
    # Benchmarks: audio carries its send time (tests/fakes/stamps.py), in μ-law or as the PCM16
    # it decodes to; silence is no speech. The fake records how late caller frames arrive (at
    # its socket, where the transport can say: the lean one) and how late it read them, and
    # stamps its own replies as it sends them.
    stamped_audio: bool = False
    record_connections: bool = True
    caller_lags: list[float] = field(default_factory=list)
    caller_read_lags: list[float] = field(default_factory=list)
    deltas_sent: int = 0
    appends_heard_at_once: int = 0  # by `RealtimeConversation.hear_at_once` (the lean endpoint)
    # Its own event loop's lateness since the last /stats?reset=1 (a late fake reads caller
    # frames late, which the benchmark would otherwise blame on the worker).
    loop_lag: LoopLagMonitor = field(default_factory=lambda: LoopLagMonitor(keep=100_000))
    pcm_frames: list[bytes] = field(default_factory=list)  # audio/pcm input as it arrived

    def valid_secret(self, token: str) -> bool:
        if token in self.accepted_keys:
            return True
        return any(
            s["value"] == token and s["expires_at"] > time.time() for s in self.secrets_minted
        )


def response_object(
    response_id: str,
    status: str,
    output: list[dict[str, Any]] | None = None,
    status_details: Any = None,
) -> dict[str, Any]:
    """A `realtime.response`, with every field the protocol's response object carries."""
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": status_details,
        "output": output or [],
        "usage": {},
    }


def bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    return token if scheme.lower() == "bearer" and token else None


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        {"code": "unauthorized", "error": "Incorrect API key provided"}, status_code=401
    )


def build_http_routes(state: FakeXAIState) -> list[Route]:
    async def api_key(request: Request) -> JSONResponse:
        state.requests.append(("GET", "/v1/api-key"))
        if state.http_delay:
            await asyncio.sleep(state.http_delay)
        key = bearer(request.headers.get("authorization", ""))
        if key not in state.accepted_keys:
            return _unauthorized()
        return JSONResponse(
            {"redacted_api_key": key[:4] + "****" + key[-4:], "api_key_blocked": False}
        )

    async def client_secrets(request: Request) -> JSONResponse:
        state.requests.append(("POST", "/v1/realtime/client_secrets"))
        if state.secret_failures:
            status = state.secret_failures.pop(0)
            return JSONResponse({"code": "rate_limited", "error": "slow down"}, status_code=status)
        key = bearer(request.headers.get("authorization", ""))
        if key not in state.accepted_keys:
            return _unauthorized()
        body = await request.json()
        seconds = state.secret_ttl_seconds or int(body.get("expires_after", {}).get("seconds", 600))
        secret = {
            "value": "xai-eph-" + secrets.token_urlsafe(24),
            "expires_at": int(time.time()) + seconds,
        }
        state.secrets_minted.append(secret)
        return JSONResponse(secret)

    return [
        Route("/v1/api-key", api_key, methods=["GET"]),
        Route("/v1/realtime/client_secrets", client_secrets, methods=["POST"]),
    ]


SPEECH_RMS = 500  # PCM16: quieter than this is silence to the fake's VAD


def rms(pcm16: bytes) -> float:
    samples = array.array("h", pcm16[: len(pcm16) // 2 * 2])
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


def quiet(pcm16: bytes) -> bool:
    return rms(pcm16) < SPEECH_RMS


def session_problems(session: Any) -> str | None:
    """What the real server would refuse in a `session.update`, or None."""
    if not isinstance(session, dict):
        return "session must be an object"
    voice = session.get("voice")
    if voice is not None and (not isinstance(voice, str) or voice.lower() not in VOICES):
        return f"unknown voice {voice!r}"
    for direction in ("input", "output"):
        audio_format = ((session.get("audio") or {}).get(direction) or {}).get("format") or {}
        if audio_format and audio_format.get("type") not in AUDIO_TYPES:
            return f"unsupported audio.{direction}.format.type {audio_format.get('type')!r}"
        rate = audio_format.get("rate")
        if audio_format.get("type") == "audio/pcm" and rate not in PCM_RATES:
            return f"unsupported audio.{direction}.format.rate {rate!r} for audio/pcm"
        if audio_format.get("type") in ("audio/pcmu", "audio/pcma") and rate not in (None, 8000):
            return f"audio.{direction}.format {audio_format['type']} is 8 kHz only"
    return None


def quantile_ms(ordered_seconds: list[float], q: float) -> float | None:
    if not ordered_seconds:
        return None
    return ordered_seconds[min(len(ordered_seconds) - 1, int(len(ordered_seconds) * q))] * 1000


class TextSocket(Protocol):
    """What a conversation needs of its WebSocket: Starlette's, or the lean benchmark one."""

    async def receive_text(self) -> str: ...

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


def audio_delta_text(event_id: str, response_id: str, item_id: str, delta: str) -> str:
    """A `response.output_audio.delta` as `RealtimeConversation.send` writes it (`json.dumps` of
    the same fields; the fake's ids and base64 need no escaping). It goes out every 20 ms of
    every reply, and building it from a dict cost ~3 µs on the benchmarks' stand-in core."""
    return (
        '{"type": "response.output_audio.delta", "event_id": "' + event_id
        + '", "response_id": "' + response_id
        + '", "item_id": "' + item_id
        + '", "output_index": 0, "content_index": 0, "delta": "' + delta + '"}'
    )  # fmt: skip


class RealtimeConversation:
    """One realtime connection of the fake."""

    def __init__(
        self,
        state: FakeXAIState,
        websocket: TextSocket,
        record: Connection,
        arrived_at: Callable[[], float] = time.time,
    ) -> None:
        """`arrived_at`: when the event being handled reached the socket (default: now)."""
        self.state, self.ws, self.record = state, websocket, record
        self.arrived_at = arrived_at
        self.frames = 0
        self.utterance = 0
        self.responding: asyncio.Task[None] | None = None
        self.response_open = False  # from starting a response until its response.done
        self.response_id: str | None = None
        self.cancelled: set[str] = set()
        self.counter = 0
        self.input_format: dict[str, Any] = {}
        self.output_format: dict[str, Any] = {}
        self.caller_speaking = False  # by the level VAD (browser PCM16, benchmark audio)

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter}"

    async def send(self, kind: str, **fields: Any) -> None:
        event = {"type": kind, "event_id": self.next_id("event"), **fields}
        if self.state.record_connections:
            self.record.sent.append(event)
        await self.ws.send_text(json.dumps(event))

    async def run(self) -> None:
        if self.state.session_created_first:
            await self.send("session.created", session={"id": "sess_1"})
        await self.send(
            "conversation.created", conversation={"id": "conv_1", "object": "realtime.conversation"}
        )
        background = []
        if self.state.session_limit_seconds:
            background.append(asyncio.create_task(self.session_limit()))
        if self.state.ping_interval:
            background.append(asyncio.create_task(self.pings()))
        try:
            while True:
                event = json.loads(await self.ws.receive_text())
                if self.state.record_connections:
                    self.record.received.append(event)
                await self.on_event(event)
        except (WebSocketDisconnect, RuntimeError):
            return  # the peer left, or the fake closed the socket itself
        finally:
            self.record.closed = True
            for task in background:
                task.cancel()
            if self.responding:
                self.responding.cancel()

    async def session_limit(self) -> None:
        await asyncio.sleep(self.state.session_limit_seconds or 0)
        self.record.closed_by_fake = "session_limit"
        await self.ws.close(1000, "session time limit reached")

    async def pings(self) -> None:
        while True:
            await asyncio.sleep(self.state.ping_interval or 1)
            await self.send("ping", timestamp=int(time.time() * 1000))

    async def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "session.update":
            await asyncio.sleep(self.state.handshake_delay)
            problem = session_problems(event.get("session"))
            if problem:
                await self.error("invalid_request_error", "invalid_value", problem, event)
                return
            audio = event["session"].get("audio") or {}
            self.input_format = (audio.get("input") or {}).get("format") or {}
            self.output_format = (audio.get("output") or {}).get("format") or {}
            await self.send("ping", timestamp=int(time.time() * 1000))
            await self.send("session.updated", session=event.get("session", {}))
        elif kind == "input_audio_buffer.append":
            frame = base64.b64decode(event["audio"], validate=True)  # a real server refuses garbage
            pcm = self.input_format.get("type") == "audio/pcm"
            if self.state.stamped_audio:
                await self.stamped_caller_audio(stamps.pcm16_to_ulaw(frame) if pcm else frame)
            elif pcm:
                self.state.pcm_frames.append(frame)
                await self.voice_activity(frame)
            else:
                await self.caller_speech_frame()
        elif kind == "response.create":
            if self.response_open:  # one at a time: server VAD may have started one already
                await self.error(
                    "invalid_request_error",
                    "conversation_already_has_active_response",
                    "Conversation already has an active response in progress.",
                    event,
                )
                return
            self.start_response(self.respond_with_audio())
        elif kind == "response.cancel":
            if self.speaking():
                self.cancel_response(by_server=False)
            else:
                await self.error(
                    "invalid_request_error",
                    "response_cancel_not_active",
                    "Cancellation failed: no active response found.",
                    event,
                )

    def hear_at_once(self, event: Any) -> bool:
        """Hear a stamped caller append now, from the transport's frame callback, when that is
        all `on_event` would do with it: benchmark μ-law that neither starts nor ends speech, so
        nothing is sent. Its lags are recorded as `stamped_caller_audio` records them. False
        (nothing done): anything else, for `on_event` in its turn. The caller must call it only
        while `run` waits for the next event, so no event before this one is still unhandled."""
        if (
            not self.state.stamped_audio
            or self.state.record_connections
            or self.input_format.get("type") == "audio/pcm"
            or not isinstance(event, dict)
            or event.get("type") != "input_audio_buffer.append"
        ):
            return False
        try:
            ulaw = base64.b64decode(event["audio"], validate=True)
        except (KeyError, TypeError, ValueError):
            return False  # on_event fails on it the same way, in its turn
        frames = list(stamps.frames(ulaw))
        if any(stamps.is_silence(frame) == self.caller_speaking for frame in frames):
            return False  # speech starts or ends: events to send
        self.time_caller_frames(frames)
        self.state.appends_heard_at_once += 1
        return True

    async def stamped_caller_audio(self, ulaw: bytes) -> None:
        """Benchmark audio (tests/fakes/stamps.py), as μ-law whatever format it came in: each
        20 ms in it is timed from its stamp, and heard by the server VAD."""
        frames = list(stamps.frames(ulaw))
        self.time_caller_frames(frames)
        for frame in frames:
            await self.heard(loud=not stamps.is_silence(frame))

    def time_caller_frames(self, frames: list[bytes]) -> None:
        """Each stamped 20 ms frame's lag: to when the event reached the socket, and to now."""
        arrived_at, read_at = self.arrived_at(), time.time()
        for frame in frames:
            sent_at = stamps.read_stamp(frame)
            self.state.caller_lags.append(arrived_at - sent_at)
            self.state.caller_read_lags.append(read_at - sent_at)

    async def caller_speech_frame(self) -> None:
        """Speech for the counting VAD: an utterance is `frames_per_utterance` frames."""
        self.frames += 1
        if self.frames == 1:
            await self.speech_started()
        if self.frames >= self.state.frames_per_utterance:
            self.frames = 0
            await self.end_of_utterance()

    async def voice_activity(self, pcm16: bytes) -> None:
        """Server VAD for a browser's PCM16."""
        await self.heard(loud=not quiet(pcm16))

    async def heard(self, *, loud: bool) -> None:
        """Server VAD by level: speech starts with the first loud frame after quiet ones and
        the utterance ends with the first quiet frame after it."""
        if loud and not self.caller_speaking:
            self.caller_speaking = True
            await self.speech_started()
        elif not loud and self.caller_speaking:
            self.caller_speaking = False
            await self.end_of_utterance()

    async def speech_started(self) -> None:
        await self.send(
            "input_audio_buffer.speech_started", audio_start_ms=0, item_id=self.next_id("item")
        )
        if self.state.server_cancel_on_speech and self.speaking():
            self.cancel_response(by_server=True)

    def speaking(self) -> bool:
        return self.responding is not None and not self.responding.done()

    async def response_done(self, **fields: Any) -> None:
        """The last event of a response: from here on, another may be asked for."""
        self.response_open = False
        await self.send("response.done", **fields)

    def start_response(self, work: Any) -> None:
        async def until_the_peer_leaves() -> None:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await work

        self.response_open = True
        self.responding = asyncio.create_task(until_the_peer_leaves())

    def cancel_response(self, *, by_server: bool) -> None:
        if self.response_id:
            self.cancelled.add(self.response_id)
        self.response_open = False  # what is left of it is on its way out: a new one may start

    async def error(self, kind: str, code: str, message: str, event: Any = None) -> None:
        event_id = event.get("event_id") if isinstance(event, dict) else None
        await self.send(
            "error", error={"type": kind, "code": code, "message": message, "event_id": event_id}
        )

    async def end_of_utterance(self) -> None:
        index = self.utterance
        self.utterance += 1
        await self.send(
            "input_audio_buffer.speech_stopped", audio_end_ms=100, item_id=self.next_id("item")
        )
        await self.send("input_audio_buffer.committed", item_id=self.next_id("item"))
        transcripts = self.state.caller_transcripts
        transcript = (
            transcripts[index] if index < len(transcripts) else f"caller utterance {index + 1}"
        )
        await self.send(
            "conversation.item.input_audio_transcription.completed",
            item_id=self.next_id("item"),
            transcript=transcript,
        )
        if self.state.send_unknown_events:
            await self.send("x.future_event", detail="a type this runtime has never seen")
        scripted_error = self.state.errors_on_utterance.get(index)
        if scripted_error is not None:
            await self.send("error", error={"event_id": None, "message": "", **scripted_error})
            if self.state.close_after_error is not None:
                self.record.closed_by_fake = "error"
                await self.ws.close(self.state.close_after_error, "error")
                return
        if self.state.drop_on_utterance == index:
            self.record.closed_by_fake = "drop"
            await self.ws.close(1011, "internal error")
            return
        if self.response_open:
            # One response at a time: the client asked for one while the caller spoke, and
            # that one answers this utterance.
            return
        tools = self.state.tool_turns.get(index)
        if tools is not None:
            self.start_response(self.call_tools(tools if isinstance(tools, list) else [tools]))
        else:
            status = self.state.response_status_on_utterance.get(index, "completed")
            self.start_response(self.respond_with_audio(status))

    async def call_tools(self, tools: list[ToolTurn]) -> None:
        response_id = self.next_id("resp")
        self.response_id = response_id
        await self.send("response.created", response=response_object(response_id, "in_progress"))
        output = []
        for index, tool in enumerate(tools):
            call_id, arguments = self.next_id("call"), json.dumps(tool.arguments)
            item = {
                "id": self.next_id("item"),
                "object": "realtime.item",
                "type": "function_call",
                "status": "in_progress",
                "call_id": call_id,
                "name": tool.name,
            }
            await self.send(
                "response.output_item.added", response_id=response_id, output_index=index, item=item
            )
            if tool.style in ("streamed", "streamed_bare_done"):
                half = len(arguments) // 2
                for piece in (arguments[:half], arguments[half:]):
                    await self.send(
                        "response.function_call_arguments.delta",
                        response_id=response_id,
                        item_id=item["id"],
                        output_index=index,
                        call_id=call_id,
                        delta=piece,
                    )
                # As documented, .done repeats the whole arguments; "streamed_bare_done" leaves
                # them out (and the response id), which a tolerant reader must also survive.
                done = {} if tool.style == "streamed_bare_done" else {"arguments": arguments}
                if tool.style == "streamed":
                    done |= {"response_id": response_id, "item_id": item["id"]}
                await self.send(
                    "response.function_call_arguments.done", call_id=call_id, name=tool.name, **done
                )
            elif tool.style == "arguments_done":
                await self.send(
                    "response.function_call_arguments.done",
                    response_id=response_id,
                    call_id=call_id,
                    name=tool.name,
                    arguments=arguments,
                )
            output.append({**item, "status": "completed", "arguments": arguments})
        await self.response_done(response=response_object(response_id, "completed", output))
        self.response_id = None

    async def respond_with_audio(self, status: str = "completed") -> None:
        response_id = self.next_id("resp")
        self.response_id = response_id
        await self.send("response.created", response=response_object(response_id, "in_progress"))
        item_id = self.next_id("item")
        await self.send(
            "response.output_item.added",
            response_id=response_id,
            output_index=0,
            item={
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
        )
        late = 0
        loop = asyncio.get_running_loop()
        due = loop.time()  # paced against the clock: a late send does not slow the rest
        for chunk in self.state.reply_audio:
            if response_id in self.cancelled:
                if late >= self.state.audio_after_cancel:
                    break
                late += 1  # already on the wire when the cancel arrived
            if self.state.stamped_audio:
                chunk = stamps.stamp(time.time()) + chunk[stamps.STAMP_BYTES :]
                if self.output_format.get("type") == "audio/pcm":
                    chunk = stamps.ulaw_to_pcm16(chunk)
            delta = base64.b64encode(chunk).decode()
            text = audio_delta_text(self.next_id("event"), response_id, item_id, delta)
            if self.state.record_connections:
                self.record.sent.append(json.loads(text))
            await self.ws.send_text(text)
            self.state.deltas_sent += 1
            if self.state.delta_interval:
                due += self.state.delta_interval
                await asyncio.sleep(max(0.0, due - loop.time()))
        self.response_id = None
        if response_id in self.cancelled:
            await self.response_done(response=response_object(response_id, "cancelled"))
            return
        part = {"response_id": response_id, "item_id": item_id, "output_index": 0}
        await self.send("response.output_audio.done", **part, content_index=0)
        await self.send(
            "response.output_audio_transcript.done",
            **part,
            content_index=0,
            transcript=self.state.agent_transcript,
        )
        await self.response_done(
            response=response_object(
                response_id,
                status,
                status_details=None if status == "completed" else {"reason": status},
            ),
        )


def build_app(state: FakeXAIState) -> Starlette:
    async def realtime(websocket: WebSocket) -> None:
        state.upgrade_attempts += 1
        if state.upgrade_failures:
            status = state.upgrade_failures.pop(0)
            await websocket.send_denial_response(Response("busy", status_code=status))
            return
        token = bearer(websocket.headers.get("authorization", ""))
        if token is None or not state.valid_secret(token):
            await websocket.close(4001, "unauthorized")  # before accept: the handshake is refused
            return
        await websocket.accept()
        record = Connection(model=websocket.query_params.get("model", ""), authorization=token)
        state.connections.append(record)
        await RealtimeConversation(state, websocket, record).run()

    async def stats(request: Request) -> JSONResponse:
        if request.query_params.get("reset"):
            state.caller_lags.clear()
            state.caller_read_lags.clear()
            state.deltas_sent = 0
            state.appends_heard_at_once = 0
            state.loop_lag.reset()
            state.loop_lag.start()
        lags, read_lags = sorted(state.caller_lags), sorted(state.caller_read_lags)
        return JSONResponse(
            {
                "connections": len(state.connections),
                "caller_frames": len(lags),
                "deltas_sent": state.deltas_sent,
                "appends_heard_at_once": state.appends_heard_at_once,
                "caller_lags_ms": {q: quantile_ms(lags, float(q)) for q in ("0.5", "0.99")},
                "caller_read_lags_ms": {
                    q: quantile_ms(read_lags, float(q)) for q in ("0.5", "0.99")
                },
                "loop_lag_ms": {
                    q: (state.loop_lag.quantile(float(q)) or 0.0) * 1000
                    for q in ("0.5", "0.99", "1.0")
                },
            }
        )

    return Starlette(
        routes=[
            *build_http_routes(state),
            Route("/stats", stats),
            WebSocketRoute("/v1/realtime", realtime),
        ]
    )
