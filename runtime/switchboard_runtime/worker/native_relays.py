"""A bridged call's audio frames relayed in compiled code (`frame_relay.pyx`), when it is built.

Inside picows' frame callback, a caller's media frame and an agent's audio delta take the
compiled relay while the Python path would relay them at once (nothing queued before them, no
wait, nothing to time or drop); any other frame, and any frame in any other state, takes the
Python path as before. Per frame that saves the ten or so Python calls between the callback and
the write (`make bench-runtime` prices it: docs/benchmarks.md).
`SWITCHBOARD_WORKER_NATIVE_FRAME_RELAY=false` turns it off; where the module could not be built
(no C compiler when the runtime was installed), the worker runs the Python path alone and says
so once at start.
"""

import contextlib
import importlib
import logging
from collections import Counter
from collections.abc import Iterator
from types import ModuleType
from typing import Any, NamedTuple

from switchboard_runtime.session import GrokRealtimeSession
from switchboard_runtime.telephony import BridgeStats, Dialect, Start
from switchboard_runtime.worker.media_plane import MediaSocket
from switchboard_runtime.worker.streams import CallSocket
from switchboard_runtime.worker.xai_socket import PicowsRealtimeSocket

logger = logging.getLogger(__name__)

# Stands for the payload in a dialect's media frame: what comes before it and after it is the
# frame's head and tail, the same for every frame of the call.
PAYLOAD_MARKS = ("payload-mark-1", "payload-mark-2")


class CompiledRelays(NamedTuple):
    """A bridged call's two relays (`frame_relay.CallerAudio`, `frame_relay.AgentAudio`)."""

    caller: Any
    agent: Any


# Audio frames relayed by calls that have ended, by (direction, path): `/metrics`.
AudioFrames = Counter[tuple[str, str]]


def count_audio_frames(
    counts: AudioFrames, stats: BridgeStats, relays: CompiledRelays | None
) -> None:
    """Add a call's frames to `counts`: how many each relay took, and the rest (Python's)."""
    for direction, frames, relay in (
        ("caller", stats.frames_in, relays.caller if relays else None),
        ("agent", stats.frames_out, relays.agent if relays else None),
    ):
        compiled = relay.relayed if relay is not None else 0
        counts[direction, "compiled"] += compiled
        counts[direction, "python"] += frames - compiled


def frame_relay_module() -> ModuleType | None:
    """The compiled relays, or None (said once, with why) where they were not built or do not
    load: compiled against another picows' C layout, Cython refuses it with a ValueError."""
    try:
        return importlib.import_module("switchboard_runtime.worker.frame_relay")
    except Exception as exc:  # any failure to load means the Python path
        logger.warning("no compiled frame relay (%s): every frame takes the Python path", exc)
        return None


def media_frame_parts(dialect: Dialect, stream_id: str) -> tuple[bytes, bytes] | None:
    """(head, tail) such that head + payload + tail is `dialect.media(stream_id, payload)` for a
    payload JSON writes as it is; None if the dialect's frame is not built that way."""
    first, second = (dialect.media(stream_id, mark) for mark in PAYLOAD_MARKS)
    head, found, tail = first.rpartition(f'"{PAYLOAD_MARKS[0]}"')
    if not found or second != f'{head}"{PAYLOAD_MARKS[1]}"{tail}':
        return None
    return f'{head}"'.encode(), f'"{tail}'.encode()


@contextlib.contextmanager
def native_frame_relays(
    module: ModuleType | None,
    phone: CallSocket,
    dialect: Dialect,
    start: Start,
    session: GrokRealtimeSession,
    stats: BridgeStats,
) -> Iterator[CompiledRelays | None]:
    """For as long as the call is bridged, its two sockets try the compiled relays first (when
    `module` is there and both sockets are the worker's picows ones); the relays, or None."""
    xai = session.realtime_socket
    parts = media_frame_parts(dialect, start.stream_id)
    if (
        module is None
        or parts is None
        or not isinstance(phone, MediaSocket)
        or not isinstance(xai, PicowsRealtimeSocket)
    ):
        yield None
        return
    relays = CompiledRelays(
        module.CallerAudio(phone, xai, session, stats),
        module.AgentAudio(phone, xai, session, stats, *parts),
    )
    phone.native, xai.native = relays
    try:
        yield relays
    finally:
        phone.native = xai.native = None
