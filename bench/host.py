"""How fast this host runs right now: a fixed piece of work that every benchmark times first.

The machine is shared, so the same code takes longer at one moment than at another. A result
file carries this figure, and runs from different moments compare by it (a run whose reference
is twice as slow ran on a host twice as busy), not by the clock on the wall.
"""

import base64
import json
import statistics
import time

from switchboard_runtime import protocol
from switchboard_runtime.telephony import DIALECTS, Media

_FRAME = json.dumps(
    {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": base64.b64encode(bytes([0x7F]) * 160).decode()},
    }
)


def host_reference_us() -> float:
    """The worker's own per-frame work: a Twilio media frame parsed and checked, and the xAI
    append built from it; process CPU time, median of 5 rounds of 20,000, in µs per frame."""
    twilio = DIALECTS["twilio"]
    rounds = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(20_000):
            media = twilio.parse(json.loads(_FRAME))
            assert isinstance(media, Media)
            protocol.append_audio(media.payload)
        rounds.append((time.process_time() - started) / 20_000 * 1e6)
    return statistics.median(rounds)
