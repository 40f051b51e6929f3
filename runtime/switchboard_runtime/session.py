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
import collections
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
from websockets.exceptions import ConnectionClosed, InvalidStatus

from switchboard_runtime import events as wire
from switchboard_runtime import protocol
from switchboard_runtime.client import (
    ClaimedCall,
    ControlPlaneClient,
    ControlPlaneError,
    keep_lease,
)
from switchboard_runtime.contract import (
    XAI_KEY_REFUSED,
    AudioChannel,
    CallReport,
    ResolvedSessionConfig,
    TranscriptEntry,
)
from switchboard_runtime.realtime_socket import (
    CallbackRelay,
    RealtimeSocket,
    SocketOpener,
    open_realtime_socket,
)
from switchboard_runtime.tools import ToolRegistry

logger = logging.getLogger(__name__)

GROK_ENGINE = "grok-realtime"

# xAI `error` events that end the call, by `code` or by `type`, and why. Every other error is
# logged, counted in telemetry (`nonfatal_errors`) and the call goes on: realtime APIs of this
# family report many recoverable problems as errors (a bad client event, a response that
# failed), and when an error really is fatal the server also closes the socket, which ends the
# call by itself.
FATAL_ERRORS = {
    "invalid_api_key": "the key or client secret was refused: nothing further will work",
    "authentication_error": "the credentials were refused",
    "permission_error": "the key may not use this model or API",
    "insufficient_quota": "the account has no credit left",
    "session_expired": "the session is over (its client secret or its time ran out)",
    "session_limit_reached": "xAI ended the session at its time limit",
}
# Errors that are no error for the call at all: logged at debug level, not counted.
BENIGN_ERRORS = {
    # A barge-in races the end of the response it cancels: the response was already done.
    "response_cancel_not_active": "cancelled a response that had already finished",
}
# Control-plane refusals while resolving the config that are worth another try (xAI answered
# the client-secret request with 429 or 5xx), and the end reason when the deadline passes.
RETRYABLE_CONFIG_CODES = {
    "xai_rate_limited": "xai_rate_limited",
    "xai_unavailable": "xai_unavailable",
}
# An ephemeral secret this close to its expiry is not used: the config is fetched again.
EPHEMERAL_MARGIN_SECONDS = 30
# Caller audio held while the session is set up: 10 s of 20 ms frames, beyond the set-up
# deadline, so nothing a caller says before the session is ready is lost.
HELD_AUDIO_FRAMES = 500


def _credentials_expiring(config: ResolvedSessionConfig) -> bool:
    expires_at = config.credentials.expires_at if config.credentials else None
    return expires_at is not None and expires_at - time.time() < EPHEMERAL_MARGIN_SECONDS


async def _backoff(attempt: int, deadline: float, *, base: float = 0.2, attempts: int = 4) -> bool:
    """Sleep before another try (exponential, full jitter); False when none is left."""
    delay = random.uniform(0, base * 2 ** (attempt - 1))  # noqa: S311 - jitter, not secrets
    if attempt >= attempts or time.monotonic() + delay >= deadline:
        return False
    await asyncio.sleep(delay)
    return True


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
    received_at: float = 0.0  # time.monotonic() when it came from xAI


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


# What a session reports when it ends: the contract's call report.
CallTelemetry = CallReport


class TelemetrySink(Protocol):
    async def report(self, telemetry: CallTelemetry) -> None: ...


class HttpTelemetrySink:
    """Posts each call's telemetry to the control plane (which ends the call there); a failure
    is logged, never raised.

    A control plane that is busy or briefly away (a timeout, 5xx) gets the report again with
    back-off for up to `retry_seconds`: the call is over, nobody waits for it, and the control
    plane counts a call's report once however often it arrives."""

    def __init__(
        self,
        control_plane_url: str,
        service_token: str,
        timeout: float = 3.0,
        http: httpx.AsyncClient | None = None,
        retry_seconds: float = 30.0,
    ) -> None:
        self.control_plane_url, self.service_token = control_plane_url, service_token
        self.timeout, self.http, self.retry_seconds = timeout, http, retry_seconds

    async def report(self, telemetry: CallTelemetry) -> None:
        client = ControlPlaneClient(
            self.control_plane_url, self.service_token, http=self.http, timeout=self.timeout
        )
        deadline, attempt = time.monotonic() + self.retry_seconds, 0
        try:
            while True:
                attempt += 1
                try:
                    await client.report(telemetry)
                    return
                except ControlPlaneError as exc:
                    if exc.status < 500 or not await _backoff(
                        attempt, deadline, base=0.5, attempts=8
                    ):
                        logger.warning(
                            "telemetry for call %s refused: %s", telemetry.call_id, exc.code
                        )
                        return
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
        channel: AudioChannel = "phone",
        config: ResolvedSessionConfig | dict[str, Any] | None = None,
        call: ClaimedCall | None = None,
        http_timeout: float = 3.0,
        connect_timeout: float = 5.0,
        ready_timeout: float = 5.0,
        setup_deadline: float = 8.0,
        http: httpx.AsyncClient | None = None,
        open_socket: SocketOpener = open_realtime_socket,
    ) -> None:
        self.control_plane = ControlPlaneClient(
            control_plane_url, service_token, http=http, timeout=http_timeout
        )
        self.call = call
        self.workspace_id, self.agent_id = workspace_id, agent_id
        self.tools = tools or ToolRegistry()
        self.sink: TelemetrySink = telemetry or HttpTelemetrySink(
            control_plane_url, service_token, http=http
        )
        self.credentials, self.channel = credentials, channel
        self.config = (
            ResolvedSessionConfig.model_validate(config) if isinstance(config, dict) else config
        )
        self.http_timeout, self.connect_timeout, self.ready_timeout = (
            http_timeout,
            connect_timeout,
            ready_timeout,
        )
        self.setup_deadline = setup_deadline
        self.open_socket = open_socket
        # Filled in as the call goes; validated by the control plane when reported.
        self.telemetry = CallReport.model_construct(
            call_id=call.call_id if call else "", workspace_id=workspace_id, agent_id=agent_id
        )
        self.transcripts: list[Transcript] = []
        self._ws: RealtimeSocket | None = None
        self._send_now: Callable[[str], bool] | None = None  # the socket's, when it has one
        self._outbound: asyncio.Queue[OutboundEvent] = asyncio.Queue()
        self._player_parked = False  # the phone side waits in events() with nothing queued
        # Set by the phone side while it can play agent audio without waiting (True: played):
        # then audio skips the queue and the player's wake-up (see `_play`).
        self.play_now: Callable[[AudioOut], bool] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._leased = contextlib.AsyncExitStack()  # renews the call's lease while it runs
        self._tool_tasks: set[asyncio.Task[None]] = set()
        self._seen_calls: set[str] = set()
        self._arguments: dict[str, list[str]] = {}  # call id → streamed argument deltas
        self._call_names: dict[str, str] = {}
        self._tools_of_response: dict[str, list[asyncio.Task[None]]] = {}
        self._cancelled: set[str | None] = set()  # responses whose late audio is dropped
        self._active_response: str | None = None
        self._audio_since_clear = False
        self._speech_stopped_at: float | None = None
        self._started = time.monotonic()
        # Caller audio held until xAI's session is ready (None once it has been sent).
        self._held_audio: collections.deque[str] | None = collections.deque(
            maxlen=HELD_AUDIO_FRAMES
        )
        self.stream_started_at: float | None = None  # when the phone's media stream started
        self.caller_heard = asyncio.Event()  # the caller's first frame has gone to xAI
        self.ready_at: float | None = None
        self.xai_handshake_seconds: float | None = None
        self.ended: CallEnded | None = None
        self._closing = False
        self._reported = False

    @property
    def realtime_socket(self) -> RealtimeSocket | None:
        """The call's socket to xAI, once the session has opened it (None until then)."""
        return self._ws

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
        """Run a call from nothing: the call (issued and claimed now unless given), then the
        xAI session."""
        self._started = time.monotonic()
        if self.call is None:
            # Embedded without a worker: the control plane issues the call (its cap, its
            # refusals), claimed at once since no media stream will present a token.
            self.call = await self.control_plane.start_call(self.workspace_id, self.agent_id)
        await self.attach(self.call)
        await self.prepare()

    async def attach(self, call: ClaimedCall) -> None:
        """The claimed call this session runs: reported under its id, its lease renewed until
        the session ends. A warm session is attached once its media stream claims it."""
        self.call = call
        self.telemetry.call_id = call.call_id
        self.workspace_id = self.telemetry.workspace_id = call.workspace_id
        await self._leased.enter_async_context(keep_lease(self.control_plane, call))

    async def prepare(self) -> None:
        """Set up the xAI session: the session config (unless given and fresh), xAI's socket,
        `session.update` answered by `session.updated`; then xAI is read. Caller audio sent
        before this finishes is held (bounded) and goes to xAI first, in order."""
        deadline = time.monotonic() + self.setup_deadline
        if self.config is None or _credentials_expiring(self.config):
            self.config = await self._fetch_config(deadline)
        config = self.config
        self.telemetry.tier = config.tier.id
        self.telemetry.engine = config.engine
        if config.engine != GROK_ENGINE:
            self._end("engine_mismatch", f"agent runs on {config.engine}, not {GROK_ENGINE}")
            raise CallRefusedError(
                "engine_mismatch", f"This agent's tier runs on {config.engine}; no fallback."
            )
        if config.credentials is None or not config.credentials.value:
            self._end("credentials_missing", "no xAI credentials in the session config")
            raise CallRefusedError(
                "credentials_missing", "The session config carries no xAI credentials."
            )
        url = protocol.realtime_url(config.provider.realtime_url or "", config.provider.model)
        opened = time.monotonic()
        self._ws = await self._connect(url, config.credentials.value, deadline)
        await self._ws.send(protocol.session_update(config.session.model_dump(mode="json")))
        await self._await_session_updated()
        self.xai_handshake_seconds = time.monotonic() - opened
        self._reader = asyncio.create_task(
            self._read_forever(), name=f"grok-reader-{self.telemetry.call_id}"
        )
        if isinstance(self._ws, CallbackRelay):  # the worker's: relays in its frame callback
            self._ws.take_now = self._take_now
            self._send_now = self._ws.send_now
        await self._send_held_audio()
        self.ready_at = time.monotonic()

    async def _fetch_config(self, deadline: float) -> ResolvedSessionConfig:
        """The session config; minting an ephemeral secret may meet xAI's 429/5xx: retried."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.control_plane.session_config(
                    self.workspace_id, self.agent_id, self.credentials, self.channel
                )
            except ControlPlaneError as exc:
                reason = RETRYABLE_CONFIG_CODES.get(exc.code)
                if reason is None or not await _backoff(attempt, deadline):
                    # The call ends with the control plane's reason (its key missing, its
                    # tier off), not as a call that ran and closed.
                    self._end((reason or exc.code or "session_config_refused")[:64], exc.message)
                    raise

    async def _connect(self, url: str, secret: str, deadline: float) -> RealtimeSocket:
        """Open xAI's socket; 429, 5xx and timeouts are retried with jitter until the setup
        deadline, then the call ends with `xai_rate_limited` or `xai_unavailable`."""
        attempt = 0
        while True:
            attempt += 1
            try:
                # No permessage-deflate: base64 μ-law barely compresses, and deflating every
                # 20 ms frame only costs CPU.
                return await self.open_socket(
                    url,
                    headers={"Authorization": f"Bearer {secret}"},
                    open_timeout=min(self.connect_timeout, max(0.1, deadline - time.monotonic())),
                    max_size=2**22,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status == 429:
                    reason, detail = "xai_rate_limited", "xAI answered 429 to the connection"
                elif status >= 500:
                    reason, detail = "xai_unavailable", f"xAI answered {status}"
                else:
                    # 401/403: the workspace's own key (its fault, not the provider's).
                    refused = XAI_KEY_REFUSED if status in (401, 403) else "xai_refused"
                    self._end(refused, f"HTTP {status}")
                    raise CallRefusedError(
                        refused, f"xAI refused the realtime connection (HTTP {status})."
                    ) from exc
            except (OSError, TimeoutError) as exc:
                reason, detail = "xai_unavailable", type(exc).__name__
            if not await _backoff(attempt, deadline):
                self._end(reason, detail)
                raise CallRefusedError(reason, f"xAI could not be reached in time ({detail}).")
            self.telemetry.connect_retries += 1

    async def _await_session_updated(self) -> None:
        assert self._ws is not None
        try:
            async with asyncio.timeout(self.ready_timeout):
                async for raw in self._ws:
                    event = wire.parse_server_event(raw)
                    if isinstance(event, wire.Malformed):
                        continue
                    if event.type == "session.updated":
                        return
                    if isinstance(event, wire.ErrorEvent):
                        # Before the session is set up any error means it will not be.
                        message = event.error.message
                        self._end("xai_error", message)
                        raise CallRefusedError("xai_error", f"xAI refused the session: {message}")
                    # session.created / conversation.created come first; pings come any time.
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

    async def refuse(self, reason: str, detail: str = "") -> None:
        """End the call without running it (its set-up failed, its stream was refused)."""
        self._end(reason, detail)
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
            began = self.stream_started_at or self._started
            self.telemetry.duration_ms = round((time.monotonic() - began) * 1000, 1)
            if self.stream_started_at is not None and self.ready_at is not None:
                wait = max(0.0, self.ready_at - self.stream_started_at)
                self.telemetry.setup_wait_ms = round(wait * 1000, 1)
            if self.config is not None and self.config.keep_transcripts:
                # The workspace keeps transcripts (opt-in); nobody else's words leave the call.
                self.telemetry.transcript = [
                    TranscriptEntry(role=t.role, text=t.text[:4000]) for t in self.transcripts
                ][:2000]
            await self.sink.report(self.telemetry)
        await self.control_plane.aclose()

    async def _close_socket(self) -> None:
        self._closing = True
        if isinstance(self._ws, CallbackRelay):  # no cycle left for the collector to find
            self._ws.take_now = self._send_now = None
        if self._ws is not None:
            await self._ws.close()

    # --- talking to xAI -----------------------------------------------------------------------

    async def send_audio(self, payload_b64: str) -> None:
        """Caller audio, base64, passed through untouched; held until the session is ready."""
        if self.ended is not None:
            return
        if self._held_audio is not None:
            self._hold(payload_b64)
            return
        if self._ws is None:
            return
        try:
            await self._ws.send(protocol.append_audio(payload_b64))
        except ConnectionClosed:
            return  # the reader notices and ends the call
        self.caller_heard.set()

    def send_audio_now(self, payload_b64: str) -> bool:
        """`send_audio` from a frame callback: True when done without waiting; False when it
        would have to wait (xAI not reading, the socket closing): then `send_audio` it."""
        if self.ended is not None:
            return True
        if self._held_audio is not None:
            self._hold(payload_b64)
            return True
        send_now = self._send_now
        if send_now is None or not send_now(protocol.append_audio(payload_b64)):
            return False
        self.caller_heard.set()
        return True

    def _hold(self, payload_b64: str) -> None:
        held = self._held_audio
        assert held is not None
        if len(held) == held.maxlen:
            self.telemetry.held_audio_dropped += 1  # the oldest goes: heard from now on
        held.append(payload_b64)

    async def _send_held_audio(self) -> None:
        """What the caller said during set-up, oldest first. Frames arriving meanwhile join the
        queue, so the order holds; the queue is gone only once it is empty."""
        assert self._ws is not None
        held = self._held_audio
        if held:
            self.caller_heard.set()
        while held:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(protocol.append_audio(held.popleft()))
        self._held_audio = None

    async def send_text(self, text: str) -> None:
        if self._ws is not None and self.ended is None:
            await self._ws.send(protocol.user_text(text))
            await self._ws.send(protocol.response_create())

    async def events(self) -> AsyncIterator[OutboundEvent]:
        """Everything the phone side needs, until (and including) CallEnded."""
        while True:
            self._player_parked = True
            try:
                event = await self._outbound.get()
            finally:
                self._player_parked = False
            yield event
            if isinstance(event, CallEnded):
                return

    # --- reading xAI --------------------------------------------------------------------------

    def _take_now(self, raw: str | bytes) -> bool:
        """Agent audio straight from the socket's frame callback while the reader is parked:
        the most frequent event needs no await. Anything else goes to the reader (False)."""
        if self.ended is not None:
            return False
        chunk = wire.parse_audio_delta(raw)
        if chunk is None:
            return False
        self._audio(chunk.delta, chunk.response_id)
        return True

    async def _read_forever(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                await self._handle(wire.parse_server_event(raw))
            if not self._closing:
                # xAI closes a healthy session only at its session limit.
                self._end("xai_session_limit", self._ws.close_reason or "", completed=True)
        except ConnectionClosed as exc:
            if not self._closing:
                self.telemetry.websocket_disconnects += 1
                self._end("xai_disconnected", f"code {exc.rcvd.code if exc.rcvd else 'none'}")

    async def _handle(self, event: wire.ServerEvent | wire.Malformed) -> None:
        if isinstance(event, wire.AudioDelta):
            self._audio(event.delta, event.response_id)
        elif isinstance(event, wire.ResponseCreated):
            self._active_response = event.response.id or "response"
        elif isinstance(event, wire.AudioDone):
            if event.response_id not in self._cancelled:
                self._outbound.put_nowait(AudioDone(event.response_id or ""))
        elif isinstance(event, wire.AgentTranscriptDone):
            self._transcript("agent", event.transcript)
        elif isinstance(event, wire.CallerTranscriptCompleted):
            self._transcript("caller", event.transcript)
        elif isinstance(event, wire.SpeechStarted):
            await self._barge_in()
        elif isinstance(event, wire.SpeechStopped):
            self._speech_stopped_at = time.monotonic()
        elif isinstance(event, wire.OutputItemAdded):
            item = event.item
            if item.get("type") == "function_call" and item.get("call_id"):
                self._call_names[str(item["call_id"])] = str(item.get("name") or "")
        elif isinstance(event, wire.FunctionCallArgumentsDelta):
            self._arguments.setdefault(event.call_id, []).append(event.delta)
            if event.name:
                self._call_names[event.call_id] = event.name
        elif isinstance(event, wire.FunctionCallArgumentsDone):
            streamed = "".join(self._arguments.pop(event.call_id, []))
            self._start_tool(
                protocol.FunctionCall(
                    event.call_id,
                    event.name or self._call_names.get(event.call_id, ""),
                    event.arguments if event.arguments is not None else (streamed or "{}"),
                    event.response_id or self._active_response,
                )
            )
        elif isinstance(event, wire.ResponseDone):
            await self._response_done(event)
        elif isinstance(event, wire.ErrorEvent):
            await self._error(event.error)
        elif isinstance(event, wire.UnknownEvent):
            self.telemetry.unknown_events += 1
            logger.info("unknown xAI event %r skipped", event.type[:64])
        elif isinstance(event, wire.Malformed):
            self.telemetry.unknown_events += 1
            logger.warning("xAI sent a frame the runtime cannot read (%s); skipped", event.why)

    def _audio(self, delta: str, response_id: str | None) -> None:
        response = response_id or self._active_response
        if response in self._cancelled:
            return  # still in flight when the response was cancelled: the caller must not hear it
        now = time.monotonic()
        if self.telemetry.time_to_first_audio_ms is None:
            # From the caller's last word, or (the agent speaking first) from when both the
            # session and the phone were there.
            since = self._speech_stopped_at or max(self.ready_at or 0, self.stream_started_at or 0)
            self.telemetry.time_to_first_audio_ms = round((now - (since or now)) * 1000, 1)
        self._audio_since_clear = True
        self._play(AudioOut(delta, now))

    def _play(self, audio: AudioOut) -> None:
        """To the phone at once when its player is parked with nothing queued before this and
        the phone takes it without waiting; else in order through the queue."""
        play_now = self.play_now
        if play_now is not None and self._player_idle() and play_now(audio):
            return
        self._outbound.put_nowait(audio)

    def _player_idle(self) -> bool:
        """The phone side waits in `events()` with nothing queued: audio played now overtakes
        nothing (while it plays an earlier event, this one would)."""
        return self._player_parked and self._outbound.empty()

    async def _response_done(self, event: wire.ResponseDone) -> None:
        response = event.response
        if response.id and response.id == self._active_response:
            self._active_response = None
        if response.status == "cancelled" and response.id not in self._cancelled:
            # Cancelled by xAI itself (its own turn detection): the same as a barge-in.
            self._cancelled.add(response.id)
            self._clear_phone()
        elif response.status in ("failed", "incomplete"):
            self.telemetry.nonfatal_errors += 1
            logger.warning(
                "call %s: xAI response %s %s: %s",
                self.telemetry.call_id,
                response.id,
                response.status,
                str(response.status_details)[:200],
            )
        for call in protocol.function_calls_in(event):
            self._start_tool(call)
        tools = self._tools_of_response.pop(response.id or "", [])
        if tools:
            # One response.create once every tool of this response has answered.
            self._spawn(self._continue_after(tools))

    async def _error(self, error: wire.RealtimeError) -> None:
        code, kind = error.code or "", error.type or ""
        if code in BENIGN_ERRORS:
            logger.debug("call %s: %s (%s)", self.telemetry.call_id, code, BENIGN_ERRORS[code])
            return
        if code in FATAL_ERRORS or kind in FATAL_ERRORS:
            self._end("xai_error", f"{code or kind}: {error.message}"[:300])
            await self._close_socket()
            return
        self.telemetry.nonfatal_errors += 1
        logger.warning(
            "call %s: xAI error %s, call goes on: %s",
            self.telemetry.call_id,
            code or kind or "error",
            error.message[:200],
        )

    def _transcript(self, role: Literal["caller", "agent"], text: str) -> None:
        transcript = Transcript(role, text)
        self.transcripts.append(transcript)
        self.telemetry.transcript_events += 1
        self._outbound.put_nowait(transcript)

    async def _barge_in(self) -> None:
        """The caller speaks: stop the model, and drop audio the phone has not played yet."""
        if self._active_response is not None and self._ws is not None:
            self._cancelled.add(self._active_response)
            self._active_response = None
            try:
                await self._ws.send(protocol.response_cancel())
            except ConnectionClosed:
                return
        self._clear_phone()

    def _clear_phone(self) -> None:
        """Once per stretch of agent audio: the phone drops what it has queued."""
        if self._audio_since_clear:
            self._audio_since_clear = False
            self._outbound.put_nowait(ClearAudio())

    # --- tools -------------------------------------------------------------------------------

    def _start_tool(self, call: protocol.FunctionCall) -> None:
        """Run each call once, whichever event announced it; tools of a response run at once."""
        if call.call_id in self._seen_calls:
            return
        self._seen_calls.add(call.call_id)
        task = self._spawn(self._run_tool(call))
        self._tools_of_response.setdefault(call.response_id or "", []).append(task)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tool_tasks.add(task)
        task.add_done_callback(self._tool_tasks.discard)
        return task

    async def _run_tool(self, call: protocol.FunctionCall) -> None:
        result = await self.tools.run(call.name, call.arguments)
        if result.ok:
            self.telemetry.tool_calls_ok += 1
        else:
            self.telemetry.tool_calls_failed += 1
            self.telemetry.tool_calls_failed_in_tool += result.failed_in_tool
        if self._ws is None or self.ended is not None:
            return
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(protocol.function_call_output(call.call_id, result.output))

    async def _continue_after(self, tools: list[asyncio.Task[None]]) -> None:
        await asyncio.gather(*tools, return_exceptions=True)
        if self._ws is None or self.ended is not None:
            return
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(protocol.response_create())

    def _end(self, reason: str, detail: str, *, completed: bool = False) -> None:
        if self.ended is not None:
            return
        self.ended = CallEnded(reason, detail)
        self.telemetry.end_reason = reason
        self.telemetry.completed = completed
        self._outbound.put_nowait(self.ended)
        log = logger.info if completed else logger.warning
        log("call %s ended: %s %s", self.telemetry.call_id, reason, detail)
