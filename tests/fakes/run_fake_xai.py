"""Run the fake xAI server as its own process (benchmarks).

Usage: python -m tests.fakes.run_fake_xai PORT KEY [--stamped | --eager [--utterance-frames N]]
       [--lean-realtime PORT2]

With --stamped (the bridged-calls benchmark) audio carries send times, silence is no speech, an
utterance is 25 frames of speech (0.5 s) and every reply is 50 frames (1 s) played in real time.
With --eager (the warm-start benchmark) the first frame of speech is an utterance (or the first
N with --utterance-frames N: a caller who speaks for N x 20 ms) and the reply's first audio goes
out at once. With --lean-realtime the realtime endpoint is also served on PORT2
(ws://127.0.0.1:PORT2/v1/realtime) over a lean transport (tests/fakes/lean_realtime.py): the same
conversation at a fraction of the CPU, so the stand-in does not run late under load.
"""

import gc
import sys

import uvicorn
import uvloop

from tests.fakes.fake_xai import FakeXAIState, build_app
from tests.fakes.lean_realtime import serve_realtime


async def serve(state: FakeXAIState, port: int, lean_port: int | None) -> None:
    config = uvicorn.Config(
        build_app(state), host="127.0.0.1", port=port, log_level="warning", ws_ping_interval=None
    )
    lean = await serve_realtime(state, "127.0.0.1", lean_port) if lean_port else None
    try:
        await uvicorn.Server(config).serve()
    finally:
        if lean is not None:
            lean.close()


def main() -> None:
    port, key = int(sys.argv[1]), sys.argv[2]
    state = FakeXAIState(accepted_keys={key}, frames_per_utterance=25, send_unknown_events=False)
    state.reply_audio = [bytes([0xFF]) * 160 for _ in range(25)]
    state.delta_interval = 0.02  # like a real provider: about real time
    if "--stamped" in sys.argv:
        state.stamped_audio, state.record_connections = True, False
        state.reply_audio = [bytes([0xFF]) * 160 for _ in range(50)]
    if "--eager" in sys.argv:
        state.frames_per_utterance, state.delta_interval = 1, 0.0
        if "--utterance-frames" in sys.argv:
            state.frames_per_utterance = int(sys.argv[sys.argv.index("--utterance-frames") + 1])
        state.reply_audio = [bytes([0xFF]) * 160 for _ in range(5)]
        state.record_connections = False
    lean_port = None
    if "--lean-realtime" in sys.argv:
        lean_port = int(sys.argv[sys.argv.index("--lean-realtime") + 1])
    gc.collect()
    gc.freeze()  # a benchmark's instrument: its own collector pauses are not the worker's lag
    uvloop.run(serve(state, port, lean_port))


if __name__ == "__main__":
    main()
