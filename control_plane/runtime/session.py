"""GrokRealtimeSession: one phone call on xAI's Grok Voice Agent, embedded in a call backend.

    async with GrokRealtimeSession(control_plane_url=..., service_token=..., workspace_id=...,
                                   agent_id=..., tools=registry) as call:
        await call.send_audio(payload_b64)          # caller audio, G.711 μ-law, base64
        async for event in call.events():           # AudioOut, ClearAudio, Transcript, ...
            ...

On enter it pulls the resolved session config, opens xAI's realtime WebSocket with the config's
credentials, sends `session.update` and waits for `session.updated`. On exit it closes the socket
and reports the call's telemetry. It never falls back to another provider: whatever goes wrong
ends the call with a reason.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from control_plane.runtime import protocol
from control_plane.runtime.client import (
    ClaimedCall,
    ControlPlaneClient,
    ControlPlaneError,
    keep_lease,
)
from control_plane.runtime.tools import ToolRegistry

logger = logging.getLogger(__name__)

GROK_ENGINE = "grok-realtime"
IGNORED_EVENTS = {
    "ping",
    "session.updated",
    "session.created",
    "conversation.created",
    "conversation.item.added",
    "conversation.item.created",
    "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    "response.output_item.added",
    "response.output_item.done",
    "response.content_part.added",
    "response.content_part.done",
    "response.output_audio_transcript.delta",
    "response.function_call_arguments.delta",
}


# The control plane refused the call (issuing it, claiming it or resolving its config).
SessionConfigError = ControlPlaneError


class CallRefusedError(Exception):
    """The call cannot run on Grok (another engine, no credentials, xAI refused)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


# --- what the session hands to the phone side ------------------------------------------------


@dataclass(frozen=True)
class AudioOut:
    payload: str  # base64 audio exactly as xAI sent it (μ-law 8 kHz for telephony)


@dataclass(frozen=True)
class AudioDone:
    """The agent finished a response's audio: a good place for a playback mark."""

    response_id: str


@dataclass(frozen=True)
class ClearAudio:
    """Barge-in: drop whatever audio is queued on the phone side."""


@dataclass(frozen=True)
class Transcript:
    role: Literal["caller", "agent"]
    text: str


@dataclass(frozen=True)
class CallEnded:
    reason: str
    detail: str = ""


OutboundEvent = AudioOut | AudioDone | ClearAudio | Transcript | CallEnded


# --- telemetry --------------------------------------------------------------------------------


@dataclass
class CallTelemetry:
    call_id: str
    workspace_id: str
    agent_id: str
    tier: str = ""
    engine: str = GROK_ENGINE
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    time_to_first_audio_ms: float | None = None
    tool_calls_ok: int = 0
    tool_calls_failed: int = 0
    transcript_events: int = 0
    end_reason: str = ""
    completed: bool = False
    websocket_disconnects: int = 0
    duration_ms: float = 0.0


class TelemetrySink(Protocol):
    async def report(self, telemetry: CallTelemetry) -> None: ...


class HttpTelemetrySink:
    """Posts each call's telemetry to the control plane (which ends the call there); a failure
    is logged, never raised."""

    def __init__(
        self,
        control_plane_url: str,
        service_token: str,
        timeout: float = 3.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.control_plane_url, self.service_token = control_plane_url, service_token
        self.timeout, self.http = timeout, http

    async def report(self, telemetry: CallTelemetry) -> None:
        client = ControlPlaneClient(
            self.control_plane_url, self.service_token, http=self.http, timeout=self.timeout
        )
        try:
            await client.report(asdict(telemetry))
        except ControlPlaneError as exc:
            logger.warning("telemetry for call %s refused: %s", telemetry.call_id, exc.code)
        finally:
            await client.aclose()


class MemoryTelemetrySink:
    def __init__(self) -> None:
        self.reports: list[CallTelemetry] = []

    async def report(self, telemetry: CallTelemetry) -> None:
        self.reports.append(telemetry)


# --- the session ------------------------------------------------------------------------------


class GrokRealtimeSession:
    def __init__(
        self,
        *,
        control_plane_url: str,
        service_token: str,
        workspace_id: str,
        agent_id: str,
        tools: ToolRegistry | None = None,
        telemetry: TelemetrySink | None = None,
        credentials: Literal["key", "ephemeral"] = "key",
        config: dict[str, Any] | None = None,
        call: ClaimedCall | None = None,
        http_timeout: float = 3.0,
        connect_timeout: float = 5.0,
        ready_timeout: float = 5.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.control_plane = ControlPlaneClient(
            control_plane_url, service_token, http=http, timeout=http_timeout
        )
        self.call = call
        self.tools = tools or ToolRegistry()
        self.sink: TelemetrySink = telemetry or HttpTelemetrySink(
            control_plane_url, service_token, http=http
        )
        self.credentials = credentials
        self.config = config
        self.http_timeout, self.connect_timeout, self.ready_timeout = (
            http_timeout,
            connect_timeout,
            ready_timeout,
        )
        self.telemetry = CallTelemetry(
            call_id=call.call_id if call else "", workspace_id=workspace_id, agent_id=agent_id
        )
        self.transcripts: list[Transcript] = []
        self._ws: ClientConnection | None = None
        self._outbound: asyncio.Queue[OutboundEvent] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._leased = contextlib.AsyncExitStack()  # renews the call's lease while it runs
        self._tool_tasks: set[asyncio.Task[None]] = set()
        self._seen_calls: set[str] = set()
        self._active_response: str | None = None
        self._audio_since_clear = False
        self._speech_stopped_at: float | None = None
        self._started = time.monotonic()
        self.ready_at: float | None = None
        self.xai_handshake_seconds: float | None = None
        self.ended: CallEnded | None = None
        self._closing = False
        self._reported = False

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> "GrokRealtimeSession":
        try:
            await self.start()
        except BaseException:
            await self.cleanup()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cleanup()

    async def start(self) -> None:
        self._started = time.monotonic()
        if self.call is None:
            # Embedded without a worker: the control plane issues the call (its cap, its
            # refusals), claimed at once since no media stream will present a token.
            self.call = await self.control_plane.start_call(
                self.telemetry.workspace_id, self.telemetry.agent_id
            )
        self.telemetry.call_id = self.call.call_id
        self.telemetry.workspace_id = self.call.workspace_id
        await self._leased.enter_async_context(keep_lease(self.control_plane, self.call))
        if self.config is None:
            self.config = await self.control_plane.session_config(
                self.call.workspace_id, self.call.agent_id, self.credentials
            )
        config = self.config
        self.telemetry.tier = config["tier"]["id"]
        self.telemetry.engine = config["engine"]
        if config["engine"] != GROK_ENGINE:
            self._end("engine_mismatch", f"agent runs on {config['engine']}, not {GROK_ENGINE}")
            raise CallRefusedError(
                "engine_mismatch", f"This agent's tier runs on {config['engine']}; no fallback."
            )
        credentials = config.get("credentials") or {}
        if not credentials.get("value"):
            self._end("credentials_missing", "no xAI credentials in the session config")
            raise CallRefusedError(
                "credentials_missing", "The session config carries no xAI credentials."
            )
        url = protocol.realtime_url(config["provider"]["realtime_url"], config["provider"]["model"])
        opened = time.monotonic()
        try:
            self._ws = await connect(
                url,
                additional_headers={"Authorization": f"Bearer {credentials['value']}"},
                open_timeout=self.connect_timeout,
                max_size=2**22,
                ping_interval=None,
                # base64 μ-law barely compresses; deflating every 20 ms frame only costs CPU.
                compression=None,
            )
        except (OSError, InvalidStatus, TimeoutError) as exc:
            self._end("xai_refused", type(exc).__name__)
            raise CallRefusedError(
                "xai_refused", f"xAI refused the realtime connection ({type(exc).__name__})."
            ) from exc
        await self._ws.send(protocol.session_update(config["session"]))
        await self._await_session_updated()
        self.ready_at = time.monotonic()
        self.xai_handshake_seconds = self.ready_at - opened
        self._reader = asyncio.create_task(
            self._read_forever(), name=f"grok-reader-{self.telemetry.call_id}"
        )

    async def _await_session_updated(self) -> None:
        assert self._ws is not None
        try:
            async with asyncio.timeout(self.ready_timeout):
                async for raw in self._ws:
                    event = self._parse(raw)
                    if event is None:
                        continue
                    kind = event.get("type")
                    if kind == "session.updated":
                        return
                    if kind == "error":
                        message = (event.get("error") or {}).get("message", "")
                        self._end("xai_error", message)
                        raise CallRefusedError("xai_error", f"xAI refused the session: {message}")
                    # conversation.created comes first; pings come any time; neither matters here.
        except TimeoutError as exc:
            self._end("xai_timeout", "no session.updated")
            raise CallRefusedError(
                "xai_timeout", "xAI did not confirm the session in time."
            ) from exc
        except ConnectionClosed as exc:
            self._end(
                "xai_closed", f"closed during setup ({exc.rcvd.code if exc.rcvd else 'no code'})"
            )
            raise CallRefusedError("xai_closed", "xAI closed the connection during setup.") from exc
        self._end("xai_closed", "closed during setup")
        raise CallRefusedError("xai_closed", "xAI closed the connection during setup.")

    async def hangup(self, reason: str = "caller_hangup") -> None:
        """The phone side ended the call."""
        self._end(reason, "", completed=True)
        await self._close_socket()

    async def cleanup(self) -> None:
        """Close everything and report telemetry, once."""
        if self.ended is None:
            self._end("closed", "", completed=True)
        await self._close_socket()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
        for task in list(self._tool_tasks):
            task.cancel()
        await asyncio.gather(
            *(t for t in [self._reader, *self._tool_tasks] if t), return_exceptions=True
        )
        await self._leased.aclose()
        if not self._reported and self.call is not None:  # only issued calls are reported
            self._reported = True
            self.telemetry.duration_ms = round((time.monotonic() - self._started) * 1000, 1)
            await self.sink.report(self.telemetry)
        await self.control_plane.aclose()

    async def _close_socket(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()

    # --- talking to xAI -----------------------------------------------------------------------

    async def send_audio(self, payload_b64: str) -> None:
        """Caller audio, base64, passed through untouched."""
        if self._ws is None or self.ended is not None:
            return
        try:
            await self._ws.send(protocol.append_audio(payload_b64))
        except ConnectionClosed:
            return  # the reader notices and ends the call

    async def send_text(self, text: str) -> None:
        if self._ws is not None and self.ended is None:
            await self._ws.send(protocol.user_text(text))
            await self._ws.send(protocol.response_create())

    async def events(self) -> AsyncIterator[OutboundEvent]:
        """Everything the phone side needs, until (and including) CallEnded."""
        while True:
            event = await self._outbound.get()
            yield event
            if isinstance(event, CallEnded):
                return

    # --- reading xAI --------------------------------------------------------------------------

    @staticmethod
    def _parse(raw: str | bytes) -> dict[str, Any] | None:
        try:
            event = json.loads(raw)
        except ValueError:
            logger.warning("xAI sent a frame that is not JSON; skipped")
            return None
        return event if isinstance(event, dict) else None

    async def _read_forever(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                event = self._parse(raw)
                if event is not None:
                    await self._handle(event)
            if not self._closing:
                self._end("xai_session_ended", self._ws.close_reason or "", completed=True)
        except ConnectionClosed as exc:
            if not self._closing:
                self.telemetry.websocket_disconnects += 1
                self._end("xai_disconnected", f"code {exc.rcvd.code if exc.rcvd else 'none'}")

    async def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        if kind == "response.output_audio.delta":
            if self.telemetry.time_to_first_audio_ms is None:
                since = self._speech_stopped_at or self.ready_at or self._started
                self.telemetry.time_to_first_audio_ms = round((time.monotonic() - since) * 1000, 1)
            self._audio_since_clear = True
            self._outbound.put_nowait(AudioOut(event.get("delta", "")))
        elif kind == "response.created":
            self._active_response = (event.get("response") or {}).get("id", "response")
        elif kind == "response.output_audio.done":
            self._outbound.put_nowait(AudioDone(event.get("response_id", "")))
        elif kind == "response.output_audio_transcript.done":
            self._transcript("agent", event.get("transcript", ""))
        elif kind == "conversation.item.input_audio_transcription.completed":
            self._transcript("caller", event.get("transcript", ""))
        elif kind == "input_audio_buffer.speech_started":
            await self._barge_in()
        elif kind == "input_audio_buffer.speech_stopped":
            self._speech_stopped_at = time.monotonic()
        elif kind in ("response.function_call_arguments.done", "response.done"):
            if kind == "response.done":
                self._active_response = None
            for call in protocol.function_calls_in(event):
                if call.call_id not in self._seen_calls:
                    self._seen_calls.add(call.call_id)
                    task = asyncio.create_task(self._run_tool(call))
                    self._tool_tasks.add(task)
                    task.add_done_callback(self._tool_tasks.discard)
        elif kind == "error":
            error = event.get("error") or {}
            self._end(
                "xai_error",
                f"{error.get('code') or error.get('type') or 'error'}: {error.get('message', '')}",
            )
            await self._close_socket()
        elif kind not in IGNORED_EVENTS:
            logger.info("unknown xAI event %r skipped", kind[:64])

    def _transcript(self, role: Literal["caller", "agent"], text: str) -> None:
        transcript = Transcript(role, text)
        self.transcripts.append(transcript)
        self.telemetry.transcript_events += 1
        self._outbound.put_nowait(transcript)

    async def _barge_in(self) -> None:
        """The caller speaks: stop the model, and drop audio the phone has not played yet."""
        if self._active_response is not None and self._ws is not None:
            self._active_response = None
            try:
                await self._ws.send(protocol.response_cancel())
            except ConnectionClosed:
                return
        if self._audio_since_clear:
            self._audio_since_clear = False
            self._outbound.put_nowait(ClearAudio())

    async def _run_tool(self, call: protocol.FunctionCall) -> None:
        result = await self.tools.run(call.name, call.arguments)
        if result.ok:
            self.telemetry.tool_calls_ok += 1
        else:
            self.telemetry.tool_calls_failed += 1
        if self._ws is None or self.ended is not None:
            return
        try:
            await self._ws.send(protocol.function_call_output(call.call_id, result.output))
            await self._ws.send(protocol.response_create())
        except ConnectionClosed:
            return

    def _end(self, reason: str, detail: str, *, completed: bool = False) -> None:
        if self.ended is not None:
            return
        self.ended = CallEnded(reason, detail)
        self.telemetry.end_reason = reason
        self.telemetry.completed = completed
        self._outbound.put_nowait(self.ended)
        log = logger.info if completed else logger.warning
        log("call %s ended: %s %s", self.telemetry.call_id, reason, detail)
