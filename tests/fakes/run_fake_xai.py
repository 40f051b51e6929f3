"""Run the fake xAI server as its own process (benchmarks).

Usage: python -m tests.fakes.run_fake_xai PORT KEY [--stamped | --eager]

With --stamped (the bridged-calls benchmark) audio carries send times, silence is no speech, an
utterance is 25 frames of speech (0.5 s) and every reply is 50 frames (1 s) played in real time.
With --eager (the warm-start benchmark) the first frame of speech is an utterance and the reply's
first audio goes out at once.
"""

import gc
import sys

import uvicorn

from tests.fakes.fake_xai import FakeXAIState, build_app


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
        state.reply_audio = [bytes([0xFF]) * 160 for _ in range(5)]
        state.record_connections = False
    gc.collect()
    gc.freeze()  # a benchmark's instrument: its own collector pauses are not the worker's lag
    uvicorn.run(
        build_app(state), host="127.0.0.1", port=port, log_level="warning", ws_ping_interval=None
    )


if __name__ == "__main__":
    main()
