"""What the worker's Python spends relaying one media frame (`make bench-relay-path`).

A live call relays each frame inside the socket's frame callback (docs/runtime.md): a caller's
Twilio media frame is parsed and sent on to xAI as `input_audio_buffer.append`, an agent's
`response.output_audio.delta` is parsed and sent on to the phone as a Twilio media frame. Here
the real parts do it — the media plane's `MediaSocket`, the xAI socket `PicowsRealtimeSocket`, a
`GrokRealtimeSession` and `telephony.bridge` — on a uvloop loop, each frame handed to the socket
as picows hands over a whole message, over transports that only count what is written: no
kernel, no peer, no wake-up. Each way twice: on the Python path (the frame handed over as a
whole message, `on_message`), and taken by the compiled frame relay (worker/frame_relay.pyx,
handed the frame's bytes as picows' callback hands it its frame; its write goes through this
file's Python stand-in for a transport, a call the live relay makes in C). Reported: µs of process
CPU per frame, min and median of ROUNDS rounds of FRAMES frames, with the host reference
(bench/host.py) beside it; written to bench/results/relay_path.json for `make bench-report`.

A live worker spends several times this per frame (socket reads and writes, the loop's
wake-ups, colder caches): bench/runtime.py measures that, bench/socket_layers.py the socket
layers alone.
"""

import asyncio
import base64
import json
import os
import sys
from functools import partial
from pathlib import Path

import picows
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.host import Case, report_rounds, time_rounds  # noqa: E402
from bench.socket_layers import audio_delta  # noqa: E402
from switchboard_runtime.session import GrokRealtimeSession  # noqa: E402
from switchboard_runtime.telephony import DIALECTS, BridgeStats, Start, bridge  # noqa: E402
from switchboard_runtime.worker.media_plane import MediaSocket, Route  # noqa: E402
from switchboard_runtime.worker.native_relays import (  # noqa: E402
    frame_relay_module,
    native_frame_relays,
)
from switchboard_runtime.worker.xai_socket import PicowsRealtimeSocket  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
FRAMES = int(os.environ.get("BENCH_FRAMES", "20000"))

AUDIO = base64.b64encode(bytes(range(160))).decode()  # 20 ms of 8 kHz μ-law
# As Twilio and xAI send them (field order and extra fields included).
CALLER_FRAME = json.dumps(
    {
        "event": "media",
        "sequenceNumber": "5",
        "streamSid": "MZ" + "0" * 32,
        "media": {"track": "inbound", "chunk": "4", "timestamp": "80", "payload": AUDIO},
    },
    separators=(",", ":"),
)
AGENT_FRAME = json.dumps(audio_delta(AUDIO))


class CountingWire:
    """What the sockets use of picows' transport: counts the frames written."""

    def __init__(self) -> None:
        self.frames = 0
        self.underlying_transport = self

    def send(self, kind: picows.WSMsgType, data: bytes) -> None:
        self.frames += 1

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def cost_per_frame() -> dict[str, list[float]]:
    """µs of process CPU per frame, per round, each way (rounds interleaved)."""
    twilio = DIALECTS["twilio"]
    phone = MediaSocket(plane=None, route=Route("agent", twilio, None, 64 * 1024))  # type: ignore[arg-type]
    to_phone = CountingWire()
    phone.transport = to_phone  # type: ignore[assignment]
    xai = PicowsRealtimeSocket(1 << 22)
    to_xai = CountingWire()
    xai.transport = to_xai  # type: ignore[assignment]
    # A session past its set-up, as `prepare()` leaves it: its socket open, its reader parked.
    session = GrokRealtimeSession(
        control_plane_url="http://127.0.0.1:9",
        service_token="unused",  # noqa: S106 - never sent: no control plane is asked
        workspace_id="bench",
        agent_id="agent",
    )
    session._ws = xai
    session._held_audio = None
    session._reader = asyncio.create_task(session._read_forever())
    xai.take_now, session._send_now = session._take_now, xai.send_now
    start, stats = Start("MZ1", "CA1", {}), BridgeStats()
    module = frame_relay_module()
    if module is None:
        raise SystemExit("the runtime was installed without its compiled frame relay")
    with native_frame_relays(module, phone, twilio, start, session, stats) as relays:
        assert relays is not None
        call = asyncio.create_task(bridge(phone, twilio, start, session, stats))
        await asyncio.sleep(0.01)  # both bridge tasks and the reader parked
        # The call's first frame each way takes the Python path (the caller heard, the first
        # audio timed); the relays take the rest.
        phone.on_message(CALLER_FRAME)
        xai.on_message(AGENT_FRAME)
        cases = {
            "caller → xAI": Case(partial(phone.on_message, CALLER_FRAME), lambda: to_xai.frames),
            "xAI → phone": Case(partial(xai.on_message, AGENT_FRAME), lambda: to_phone.frames),
            "caller → xAI, compiled": Case(
                partial(relays.caller.relay_text, CALLER_FRAME.encode()), lambda: to_xai.frames
            ),
            "xAI → phone, compiled": Case(
                partial(relays.agent.relay_text, AGENT_FRAME.encode()), lambda: to_phone.frames
            ),
        }
        costs = await time_rounds(cases, FRAMES, ROUNDS)
        call.cancel()
        session._reader.cancel()
        await asyncio.gather(call, session._reader, return_exceptions=True)
    return costs


def main() -> None:
    costs = uvloop.run(cost_per_frame())
    report_rounds("relay_path", "frame", costs, FRAMES)


if __name__ == "__main__":
    main()
