"""Warm start: a call's xAI session is set up between its webhook and its media stream.

When `/twiml` or `/texml` issues a call, the worker starts that call's set-up at once (session
config, xAI's socket, `session.update` answered by `session.updated`) and keeps it under the call
id. The media stream that presents exactly that call's stream token on this worker takes the
session: the caller's first frame goes straight to xAI. The control plane still redeems the token
(in parallel, off the caller's path), so a token is used once however many workers see it; a
stream that lands on another worker sets its call up there, as without warm start.

A warm session nobody takes within `unclaimed_seconds` is closed and its call released (unless a
stream claimed it elsewhere): no slot and no xAI minutes leak. Each warm session belongs to an
issued call, so the workspace's call cap bounds them too; `capacity` bounds them per worker.
"""

import asyncio
import contextlib
import hmac
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from switchboard_runtime.client import IssuedCall
from switchboard_runtime.contract import stream_token_call_id
from switchboard_runtime.session import GrokRealtimeSession

logger = logging.getLogger(__name__)

OUTCOMES = ("started", "attached", "unclaimed", "failed", "full")


@dataclass
class WarmCall:
    issued: IssuedCall
    session: GrokRealtimeSession
    setup: asyncio.Task[None]
    expiry: asyncio.TimerHandle | None = None


def same_token(presented: str, issued: str) -> bool:
    """The whole token, compared in constant time: the call id in it is only a lookup key."""
    return hmac.compare_digest(presented.encode(), issued.encode())


class WarmSessions:
    """The worker's warm sessions, keyed by call id."""

    def __init__(
        self,
        *,
        unclaimed_seconds: float,
        capacity: int,
        release: Callable[[str], Awaitable[None]],
    ) -> None:
        self.unclaimed_seconds, self.capacity = unclaimed_seconds, capacity
        self._release = release
        self._calls: dict[str, WarmCall] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.counts: Counter[str] = Counter({outcome: 0 for outcome in OUTCOMES})

    @property
    def open(self) -> int:
        return len(self._calls)

    def begin(
        self,
        issued: IssuedCall,
        session: GrokRealtimeSession,
        set_up: Callable[[GrokRealtimeSession], Awaitable[None]],
    ) -> bool:
        """Start setting up this call's session; False (the call starts cold) when full."""
        if len(self._calls) >= self.capacity:
            self.counts["full"] += 1
            return False
        task = asyncio.create_task(self._set_up(session, set_up), name=f"warm-{issued.call_id}")
        entry = WarmCall(issued, session, task)
        entry.expiry = asyncio.get_running_loop().call_later(
            self.unclaimed_seconds, self._expire, issued.call_id
        )
        self._calls[issued.call_id] = entry
        self.counts["started"] += 1
        return True

    async def _set_up(
        self, session: GrokRealtimeSession, set_up: Callable[[GrokRealtimeSession], Awaitable[None]]
    ) -> None:
        try:
            await set_up(session)
        except Exception as exc:  # whatever fails ends the call, with its reason
            self.counts["failed"] += 1
            logger.warning(
                "warm set-up of call %s failed: %s", session.telemetry.call_id, type(exc).__name__
            )
            code, message = getattr(exc, "code", "setup_failed"), getattr(exc, "message", "")
            await session.refuse(str(code), str(message))

    def take(self, agent_id: str, stream_token: str) -> WarmCall | None:
        """The warm session of the call this token was issued for, once; None when this worker
        has none for it (the call is set up cold, and the control plane decides)."""
        call_id = stream_token_call_id(stream_token) if stream_token.isascii() else None
        entry = self._calls.get(call_id) if call_id else None
        if entry is None or entry.issued.agent_id != agent_id:
            return None
        if not same_token(stream_token, entry.issued.stream_token):
            return None  # a forgery naming a real call does not take (or burn) its session
        del self._calls[entry.issued.call_id]
        if entry.expiry is not None:
            entry.expiry.cancel()
        self.counts["attached"] += 1
        return entry

    def _expire(self, call_id: str) -> None:
        entry = self._calls.pop(call_id, None)
        if entry is None:
            return
        self.counts["unclaimed"] += 1
        logger.info("warm session of call %s unclaimed: closed and released", call_id)
        task = asyncio.create_task(self._close(entry))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, entry: WarmCall) -> None:
        entry.setup.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await entry.setup
        await entry.session.cleanup()  # never attached to a call: nothing is reported
        await self._release(entry.issued.call_id)

    async def aclose(self) -> None:
        """The worker stops: close every warm session and release its call."""
        entries = list(self._calls.values())
        self._calls.clear()
        for entry in entries:
            if entry.expiry is not None:
                entry.expiry.cancel()
        await asyncio.gather(
            *(self._close(entry) for entry in entries), *self._closing, return_exceptions=True
        )
