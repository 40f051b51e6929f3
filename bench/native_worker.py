"""`switchboard worker` with a call's two frame paths in native code: a floor, not a candidate.

bench/runtime.py's call stack (and so `make bench-runtime` and `make bench-peers`) starts this in
place of `switchboard worker` when BENCH_WORKER=native-floor. It is the same worker with one
change: once a call is bridged, a caller's media frame and an agent's audio delta are relayed by
bench/native_relay.pyx inside picows' frame callback — the payload found by scanning, copied into
the outgoing frame, one write — with no Python past the callback's entry. Everything else (the
webhook, claim, `start`, marks, `stop`, every other xAI event, the reports) takes the worker's own
path. What the floor skips per frame is what the worker's own compiled relay keeps
(worker/frame_relay.pyx, off in the floor's worker): the JSON and base64 checks, the order
guards (a frame relayed only with nothing queued before it), the session's bookkeeping (frames
counted, first audio timed, audio of a cancelled response dropped, audio held during set-up)
and the `event_id` on each append.

Usage: python bench/native_worker.py [switchboard-worker options]
"""

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.socket_layers import native_relay  # noqa: E402
from switchboard_runtime.telephony import Dialect, Start, bridge  # noqa: E402
from switchboard_runtime.worker import calls, cli  # noqa: E402
from switchboard_runtime.worker.media_plane import MediaSocket  # noqa: E402
from switchboard_runtime.worker.native_relays import media_frame_parts  # noqa: E402
from switchboard_runtime.worker.xai_socket import PicowsRealtimeSocket  # noqa: E402


def install() -> None:
    """Relay a bridged call's audio frames natively; every other frame as before."""
    relay = native_relay()
    phone_frame, xai_frame = MediaSocket.on_ws_frame, PicowsRealtimeSocket.on_ws_frame

    def on_phone_frame(self: Any, transport: Any, frame: Any) -> None:
        to = self.native_to
        if to is None or not relay.relay_caller(frame, to):
            phone_frame(self, transport, frame)

    def on_xai_frame(self: Any, transport: Any, frame: Any) -> None:
        to = self.native_to
        if to is None or not relay.relay_delta(frame, to, self.native_head, self.native_tail):
            xai_frame(self, transport, frame)

    async def native_bridge(
        phone: Any, dialect: Dialect, start: Start, session: Any, stats: Any = None
    ) -> Any:
        xai = session.realtime_socket
        sockets = isinstance(phone, MediaSocket) and isinstance(xai, PicowsRealtimeSocket)
        parts = media_frame_parts(dialect, start.stream_id) if sockets else None
        if parts is not None:
            phone.native_to, xai.native_to = xai.transport, phone.transport
            xai.native_head, xai.native_tail = parts
        try:
            return await bridge(phone, dialect, start, session, stats)
        finally:
            if parts is not None:
                phone.native_to = xai.native_to = None

    patches: dict[tuple[object, str], object] = {
        (MediaSocket, "native_to"): None,
        (PicowsRealtimeSocket, "native_to"): None,
        (MediaSocket, "on_ws_frame"): on_phone_frame,
        (PicowsRealtimeSocket, "on_ws_frame"): on_xai_frame,
        (calls, "bridge"): native_bridge,  # what CallRunner.bridge_grok calls
    }
    for (owner, name), value in patches.items():
        setattr(owner, name, value)


if __name__ == "__main__":
    install()
    cli.main(sys.argv[1:])
