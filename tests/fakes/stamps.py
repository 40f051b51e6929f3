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


def stamp(at: float) -> bytes:
    micros = round(at * 1_000_000)
    return bytes((micros >> (6 * shift)) & 0x3F for shift in reversed(range(STAMP_BYTES)))


def read_stamp(frame: bytes) -> float:
    micros = 0
    for byte in frame[:STAMP_BYTES]:
        micros = micros << 6 | (byte & 0x3F)
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
