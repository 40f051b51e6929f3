"""A phone call's life in the worker, from its media stream's `start` to its report.

1. The stream must present its single-use token at `start`, within the start deadline, in a
   pre-start place (never a call place): `before_token`.
2. A call answered warm (`warm_up`, at the webhook) already has its xAI session set up: the token
   is redeemed at once while the set-up finishes (`run_warm`). Otherwise the token is redeemed,
   the config fetched and the session opened now (`run_cold`).
3. The audio is bridged both ways until either side ends the call (`bridge_grok`); the phone is
   closed first, then the session reports. Another engine runs on the host's handler, or the
   call is refused: never a fallback.
Every path holds the call's place in `CallCapacity` for as long as it runs.
"""

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import State

from switchboard_runtime.client import (
    ClaimedCall,
    ControlPlaneClient,
    ControlPlaneError,
    IssuedCall,
    keep_lease,
)
from switchboard_runtime.contract import WORKER_SHUTDOWN, AudioChannel, ResolvedSessionConfig
from switchboard_runtime.logging import RepeatedWarnings
from switchboard_runtime.session import GROK_ENGINE, CallRefusedError, GrokRealtimeSession
from switchboard_runtime.telephony import (
    BridgeStats,
    Dialect,
    Start,
    bridge,
    wait_for_start,
)
from switchboard_runtime.tools import ToolRegistry
from switchboard_runtime.warm import WarmCall
from switchboard_runtime.worker.capacity import CallCapacity, PreStartSockets
from switchboard_runtime.worker.native_relays import (
    count_audio_frames,
    frame_relay_module,
    native_frame_relays,
)
from switchboard_runtime.worker.settings import WorkerSettings
from switchboard_runtime.worker.streams import CLOSE_REFUSED, CLOSE_UNAUTHORIZED, CallSocket
from switchboard_runtime.worker.xai_socket import open_picows_realtime_socket

logger = logging.getLogger(__name__)

# A host backend's handler for another engine: (the call's socket, dialect, start, resolved
# config). The socket is accepted and past its `start`; the worker closes it when the handler
# returns.
EngineHandler = Callable[[CallSocket, Dialect, Start, ResolvedSessionConfig], Awaitable[None]]

ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAX_TOKEN_CHARS = 1024
UNAUTHORIZED = "unauthorized"


async def authorize_stream(
    control_plane: ControlPlaneClient,
    agent_id: str,
    token: str | None,
    warnings: RepeatedWarnings,
    stream: AudioChannel = "phone",
) -> ClaimedCall | None:
    """The issued call this stream may run, or None. Claiming makes the token used."""
    if not token or len(token) > MAX_TOKEN_CHARS or not ID.fullmatch(agent_id):
        warnings.warn(
            "stream:no_usable_token",
            "stream refused for agent %s: no usable stream token",
            agent_id[:64],
        )
        return None
    try:
        return await control_plane.claim_call(token, agent_id, stream)
    except ControlPlaneError as exc:
        warnings.warn(
            f"claim:{exc.code}", "stream refused for agent %s: %s", agent_id[:64], exc.code
        )
        return None


class CallRunner:
    """Runs the worker's calls. Reads the app's live objects (control-plane client, capacity,
    warm sessions, ...) from `state` each time, as the routes do."""

    def __init__(
        self,
        settings: WorkerSettings,
        state: State,
        *,
        service_token: str,
        handlers: dict[str, EngineHandler],
        tools_factory: Callable[[ResolvedSessionConfig], ToolRegistry] | None,
    ) -> None:
        self.settings, self.state = settings, state
        self.service_token = service_token
        self.handlers = handlers
        self.tools_factory = tools_factory
        self.frame_relay = frame_relay_module() if settings.worker_native_frame_relay else None

    @property
    def warnings(self) -> RepeatedWarnings:
        """Where refusals anyone can cause are said (at most once a minute per kind)."""
        refusals: RepeatedWarnings = self.state.refusals
        return refusals

    # Sessions ----------------------------------------------------------------------------------

    def tools_for(self, config: ResolvedSessionConfig) -> ToolRegistry:
        if self.tools_factory:
            return self.tools_factory(config)
        return ToolRegistry(self.settings.tool_timeout_seconds)

    def new_session(
        self,
        workspace_id: str,
        agent_id: str,
        config: ResolvedSessionConfig | None = None,
        call: ClaimedCall | None = None,
        channel: AudioChannel = "phone",
    ) -> GrokRealtimeSession:
        return GrokRealtimeSession(
            channel=channel,
            control_plane_url=self.settings.control_plane_url,
            service_token=self.service_token,
            workspace_id=workspace_id,
            agent_id=agent_id,
            tools=self.tools_for(config) if config else None,
            telemetry=self.state.sink,
            config=config,
            http=self.state.http,
            call=call,
            open_socket=open_picows_realtime_socket,
        )

    def warm_up(self, issued: IssuedCall) -> None:
        """Set the call's xAI session up now, while the phone provider opens the stream; once
        per call (a webhook delivered again gets the same call, and opens no second session)."""
        if self.settings.warm_start and issued.engine == GROK_ENGINE and not issued.replayed:
            session = self.new_session(issued.workspace_id, issued.agent_id)
            session.telemetry.call_id = issued.call_id
            self.state.warm.begin(issued, session, self._set_up_warm)

    async def _set_up_warm(self, session: GrokRealtimeSession) -> None:
        session.config = await self.state.control_plane.session_config(
            session.workspace_id, session.agent_id
        )
        session.tools = self.tools_for(session.config)
        await session.prepare()

    # A socket before its token -----------------------------------------------------------------

    async def before_token(
        self, socket: CallSocket, agent_id: str, read: Callable[[], Awaitable[Any]]
    ) -> Any:
        """`read()` (a stream's start, a browser's token) on a socket that has shown no token
        yet, within the start deadline and in a pre-start place (`PreStartSockets`), never a
        call place; None when it does not come in time, or the socket is refused or evicted."""
        pre_start: PreStartSockets = self.state.pre_start
        address = socket.client_host
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.state.stream_start_timeout_seconds) as deadline:
                with pre_start.waiting(address, lambda: deadline.reschedule(loop.time())) as ok:
                    if not ok:
                        self.warnings.warn(
                            "stream:too_many_before_token",
                            "socket from %s refused: too many before a token",
                            address,
                        )
                        return None
                    return await read()
        except TimeoutError:
            self.warnings.warn(
                "stream:no_token_in_time",
                "socket for agent %s closed: no token in time",
                agent_id[:64],
            )
            return None

    # A phone's media stream --------------------------------------------------------------------

    async def run_phone_stream(
        self, phone: CallSocket, dialect: Dialect, agent_id: str, url_token: str | None
    ) -> None:
        start = await self.before_token(
            phone, agent_id, lambda: wait_for_start(phone, dialect, BridgeStats())
        )
        if start is None:
            await phone.close(CLOSE_UNAUTHORIZED, UNAUTHORIZED)
            return
        stream_started = time.monotonic()
        token = start.parameters.get("stream_token") or url_token
        capacity: CallCapacity = self.state.capacity
        if token and (warm := self.state.warm.take(agent_id, token)) is not None:
            with capacity.running(warm.issued.call_id):
                await self.run_warm(phone, dialect, start, warm, token, stream_started)
            return
        call = await authorize_stream(self.state.control_plane, agent_id, token, self.warnings)
        if call is None:
            await phone.close(CLOSE_UNAUTHORIZED, UNAUTHORIZED)
            return
        with capacity.running(call.call_id):
            await self.run_cold(phone, dialect, start, call, stream_started)

    async def bridge_grok(
        self, phone: CallSocket, dialect: Dialect, start: Start, session: GrokRealtimeSession
    ) -> BridgeStats:
        """A Grok call's audio both ways. When the worker stops, the call goes on for the drain
        time, then ends as `worker_shutdown` (not as a hang-up)."""
        self.end_on_shutdown(phone, session)
        self.state.capacity.bridged(session.telemetry.call_id)
        stats = BridgeStats()
        with native_frame_relays(self.frame_relay, phone, dialect, start, session, stats) as relays:
            try:
                return await bridge(phone, dialect, start, session, stats)
            finally:
                count_audio_frames(self.state.audio_frames, stats, relays)

    def end_on_shutdown(self, socket: CallSocket, session: GrokRealtimeSession) -> None:
        end = functools.partial(session.refuse, WORKER_SHUTDOWN, "the call worker is shutting down")
        socket.end_on_shutdown(end, self.settings.worker_drain_seconds)

    async def run_cold(
        self,
        phone: CallSocket,
        dialect: Dialect,
        start: Start,
        call: ClaimedCall,
        stream_started: float,
    ) -> None:
        control_plane: ControlPlaneClient = self.state.control_plane
        try:
            config = await control_plane.session_config(call.workspace_id, call.agent_id)
        except ControlPlaneError as exc:
            logger.warning("call %s refused: %s", call.call_id, exc.code)
            await control_plane.end_call(call.call_id, exc.code)
            await phone.close(CLOSE_REFUSED, f"{exc.code}: {exc.message}"[:120])
            return
        if config.engine != GROK_ENGINE:
            await self.run_other_engine(phone, dialect, start, config, call)
            return
        session = self.new_session(call.workspace_id, call.agent_id, config, call)
        session.stream_started_at, session.telemetry.warm_start = stream_started, False
        self.state.call_starts["cold"] += 1
        try:
            async with session:
                stats = await self.bridge_grok(phone, dialect, start, session)
                await self.finish(phone, session, stats)  # the phone first; the report follows
        except CallRefusedError as exc:
            await phone.close(CLOSE_REFUSED, f"{exc.code}: {exc.message}"[:120])

    async def run_warm(
        self,
        phone: CallSocket,
        dialect: Dialect,
        start: Start,
        warm: WarmCall,
        token: str,
        stream_started: float,
    ) -> None:
        """Redeem the token the phone presented, then bridge. The claim goes out at `start`,
        while the warm set-up (xAI's socket, `session.update`) goes on in parallel; no audio
        moves either way until the control plane has said yes. What the phone presented is
        redeemed, not the token this worker holds: the control plane checks it on its own."""
        session = warm.session
        session.stream_started_at, session.telemetry.warm_start = stream_started, True
        self.state.call_starts["warm"] += 1
        try:
            call = await authorize_stream(
                self.state.control_plane, warm.issued.agent_id, token, self.warnings
            )
            if call is None:
                await session.refuse("stream_token_refused", "the control plane refused the token")
                await phone.close(CLOSE_UNAUTHORIZED, UNAUTHORIZED)
                return
            await session.attach(call)
            stats = await self.bridge_grok(phone, dialect, start, session)
            await self.finish(phone, session, stats)  # the phone first; the report follows
        finally:
            warm.setup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warm.setup
            await session.cleanup()

    async def finish(
        self, phone: CallSocket, session: GrokRealtimeSession, stats: BridgeStats
    ) -> None:
        self.state.calls = [*self.state.calls[-99:], stats]
        ended = session.ended
        if session.ready_at is None and ended is not None:  # the set-up failed
            await phone.close(CLOSE_REFUSED, f"{ended.reason}: {ended.detail}"[:120])
            return
        await phone.close(1000, (ended.reason if ended else "ended")[:120])

    async def run_other_engine(
        self,
        phone: CallSocket,
        dialect: Dialect,
        start: Start,
        config: ResolvedSessionConfig,
        call: ClaimedCall,
    ) -> None:
        control_plane: ControlPlaneClient = self.state.control_plane
        handler = self.handlers.get(config.engine)
        if handler is None:
            await control_plane.end_call(call.call_id, "no_handler")
            reason = f"no handler registered for engine {config.engine}"
            await phone.close(CLOSE_REFUSED, reason[:120])
            return
        self.state.capacity.bridged(call.call_id)
        try:
            async with keep_lease(control_plane, call):
                await handler(phone, dialect, start, config)
        finally:
            await control_plane.end_call(call.call_id, "handler_done")
