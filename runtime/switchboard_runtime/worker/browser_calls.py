"""Test calls from an agent's page (`/ws/realtime/{agent_id}`): the browser sends its single-use
token first, then PCM16 24 kHz audio; the same call as a phone's, reported as a test call. It
takes a call place only once the control plane has redeemed its token. A refusal is said on the
page (an `error` message) before the close: people do not see close reasons."""

import contextlib
import logging
import time

from switchboard_runtime.browser import BrowserStats, bridge_browser, message, wait_for_token
from switchboard_runtime.client import ClaimedCall, ControlPlaneClient, ControlPlaneError
from switchboard_runtime.session import GROK_ENGINE, CallRefusedError
from switchboard_runtime.telephony import PhoneGone
from switchboard_runtime.worker import calls
from switchboard_runtime.worker.calls import UNAUTHORIZED, CallRunner
from switchboard_runtime.worker.capacity import CallCapacity
from switchboard_runtime.worker.streams import CLOSE_REFUSED, CLOSE_UNAUTHORIZED, CallSocket

logger = logging.getLogger(__name__)

AT_CAPACITY = "worker_at_capacity"
AT_CAPACITY_MESSAGE = "This call worker is at capacity. Try the test call again in a moment."
STOPPING = "worker_stopping"
STOPPING_MESSAGE = "This call worker is stopping. Try the test call again in a moment."


class BrowserCalls:
    def __init__(self, runner: CallRunner) -> None:
        self.runner = runner
        self.state = runner.state

    async def run(self, socket: CallSocket, agent_id: str) -> None:
        capacity: CallCapacity = self.state.capacity
        if not capacity.has_room():  # refused at once: the page keeps its token for later
            capacity.count_refusal()
            await self.refuse_for_capacity(socket, agent_id)
            return
        token = await self.runner.before_token(socket, agent_id, lambda: wait_for_token(socket))
        started = time.monotonic()
        control_plane: ControlPlaneClient = self.state.control_plane
        call = await calls.authorize_stream(
            control_plane, agent_id, token, self.runner.warnings, stream="browser"
        )
        if call is None:
            await self.refuse(
                socket,
                CLOSE_UNAUTHORIZED,
                UNAUTHORIZED,
                "This test call's token is not valid: it expired or was used. Start a new call.",
            )
            return
        with capacity.taken() as admitted:
            if admitted:
                await self.run_admitted(socket, call, started)
                return
        await control_plane.end_call(call.call_id, AT_CAPACITY)
        await self.refuse_for_capacity(socket, agent_id)

    async def refuse_for_capacity(self, socket: CallSocket, agent_id: str) -> None:
        capacity: CallCapacity = self.state.capacity
        if capacity.stopping:
            await self.refuse(socket, CLOSE_REFUSED, STOPPING, STOPPING_MESSAGE)
            return
        self.runner.warnings.warn(
            "browser:at_capacity",
            "browser call for agent %s refused: worker at capacity",
            agent_id[:64],
        )
        await self.refuse(socket, CLOSE_REFUSED, AT_CAPACITY, AT_CAPACITY_MESSAGE)

    async def run_admitted(self, browser: CallSocket, call: ClaimedCall, started: float) -> None:
        control_plane: ControlPlaneClient = self.state.control_plane
        try:
            config = await control_plane.session_config(
                call.workspace_id, call.agent_id, channel="browser"
            )
        except ControlPlaneError as exc:
            await control_plane.end_call(call.call_id, exc.code)
            await self.refuse(browser, CLOSE_REFUSED, exc.code, exc.message)
            return
        if config.engine != GROK_ENGINE:
            await control_plane.end_call(call.call_id, "engine_mismatch")
            detail = f"This agent's tier runs on {config.engine}; browser calls run on Grok."
            await self.refuse(browser, CLOSE_REFUSED, "engine_mismatch", detail)
            return
        session = self.runner.new_session(
            call.workspace_id, call.agent_id, config, call, channel="browser"
        )
        session.stream_started_at, session.telemetry.warm_start = started, False
        self.state.call_starts["browser"] += 1
        stats = BrowserStats()
        try:
            async with session:
                await browser.send_text(
                    message("ready", audio=config.session.audio.input.format.model_dump())
                )
                # Like a phone's call: drained, and told, when the worker stops.
                self.runner.end_on_shutdown(browser, session)
                stats = await bridge_browser(browser, session)
                ended = session.ended
                await browser.close(1000, (ended.reason if ended else "ended")[:120])
        except CallRefusedError as exc:
            await self.refuse(browser, CLOSE_REFUSED, exc.code, exc.message)
        except PhoneGone:
            pass  # the page closed while the session was being set up
        logger.info(
            "browser call %s: %d frames in, %d out", call.call_id, stats.frames_in, stats.frames_out
        )

    async def refuse(self, socket: CallSocket, code: int, reason: str, detail: str) -> None:
        """Say why on the page (the close reason alone is not shown to people), then close."""
        with contextlib.suppress(PhoneGone):
            await socket.send_text(message("error", code=reason, message=detail))
        await socket.close(code, reason[:120])
