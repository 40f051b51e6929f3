"""Send times carried inside benchmark audio, readable after any lossless trip through G.711.

A benchmark frame is 20 ms of 8 kHz μ-law (160 bytes): a stamp (when the frame was sent, in
microseconds since the epoch, six bits per byte) then the body (0xFF: silence, anything else:
speech). The worker forwards μ-law as it came; a pipecat bot decodes it to PCM16 and a Twilio
serializer encodes it back, and the stamp survives that too: every μ-law byte decodes and
re-encodes to itself except 0x7F (which comes back as 0xFF), and a stamp byte is at most 0x3F.
"""

import array
from collections.abc import Iterator

STAMP_BYTES = 9  # 54 bits of microseconds: good until the year 2540
FRAME_BYTES = 160  # 20 ms at 8 kHz, one byte a sample
SILENCE = 0xFF
SPEECH = 0x2A  # a loud μ-law sample: the fake's PCM voice detector hears it


# The stamp's nine six-bit digits are written out rather than looped over: the phones stamp
# every caller frame and the fake xAI every agent frame, and each reads the other's, on the one
# core the stand-ins share (`python -m timeit`, a stamp and a read: 1.1 µs, 1.9 with loops).
def stamp(at: float) -> bytes:
    m = round(at * 1_000_000)
    return bytes(
        (
            m >> 48 & 0x3F,
            m >> 42 & 0x3F,
            m >> 36 & 0x3F,
            m >> 30 & 0x3F,
            m >> 24 & 0x3F,
            m >> 18 & 0x3F,
            m >> 12 & 0x3F,
            m >> 6 & 0x3F,
            m & 0x3F,
        )
    )


def read_stamp(frame: bytes) -> float:
    f = frame
    micros = (
        (f[0] & 0x3F) << 48
        | (f[1] & 0x3F) << 42
        | (f[2] & 0x3F) << 36
        | (f[3] & 0x3F) << 30
        | (f[4] & 0x3F) << 24
        | (f[5] & 0x3F) << 18
        | (f[6] & 0x3F) << 12
        | (f[7] & 0x3F) << 6
        | (f[8] & 0x3F)
    )
    return micros / 1_000_000


def frames(ulaw: bytes) -> Iterator[bytes]:
    """The stamped 20 ms frames in audio however a bridge packed it (pipecat sends 40 ms)."""
    for start in range(0, len(ulaw) - STAMP_BYTES, FRAME_BYTES):
        yield ulaw[start : start + FRAME_BYTES]


def is_silence(frame: bytes) -> bool:
    return frame.count(SILENCE, STAMP_BYTES) == len(frame) - STAMP_BYTES


def _ulaw_to_linear(code: int) -> int:
    """ITU-T G.711 μ-law expansion of one byte."""
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code >> 4) & 0x07)
    return 0x84 - magnitude if code & 0x80 else magnitude - 0x84


def _linear_to_ulaw(sample: int) -> int:
    """ITU-T G.711 μ-law compression of one 16-bit sample (on its top 14 bits, as the
    reference encoder and Python's audioop do)."""
    top = sample >> 2
    mask = 0x7F if top < 0 else 0xFF
    magnitude = min(-top if top < 0 else top, 8159) + 0x21
    segment = max(0, magnitude.bit_length() - 6)
    if segment > 7:
        return 0x7F ^ mask
    return ((segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)) ^ mask


_DECODE = array.array("h", (_ulaw_to_linear(code) for code in range(256)))
# Indexed by a sample's 16 bits as unsigned: every encoding, computed once.
_ENCODE = bytes(_linear_to_ulaw(raw - 65536 if raw > 32767 else raw) for raw in range(65536))


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    return array.array("h", (_DECODE[code] for code in ulaw)).tobytes()


def pcm16_to_ulaw(pcm16: bytes) -> bytes:
    samples = array.array("h", pcm16[: len(pcm16) // 2 * 2])
    return bytes(_ENCODE[sample & 0xFFFF] for sample in samples)
