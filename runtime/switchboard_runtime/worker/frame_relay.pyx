# cython: language_level=3, boundscheck=False, wraparound=False
"""A bridged call's two audio paths in compiled code: a caller's media frame to xAI as an
`input_audio_buffer.append`, an agent's audio delta to the phone as a media frame.

Each is what the Python path does with the same frame inside picows' frame callback
(`MessageListener.hand_over` into `bridge`'s `caller_frame_now`, or into the session's
`_take_now` and `_play`), with the same checks and the same effects, reading the same state;
past the callback's entry it runs no Python function but the asyncio queue's `empty()` (and
`asyncio.Event.is_set()` for a socket its peer once held back). A relay takes a frame only when it can do
all of it: the frame is one whole text frame of printable ASCII that is a JSON object (checked
to the letter, as orjson would: nothing past it, no trailing comma, no leading zero), its
strings hold no escapes, the fields it needs are there exactly once, the caller's payload is
base64 as `binascii.a2b_base64(strict_mode=True)` takes it, and the state the Python path
consults says "relay it now". For anything else it does nothing and says so (False); the frame
then takes the Python path, which decides as it always has (drops, queues, counts, closes).
So a relay can only take a subset of what the Python path would do at once, never more:
tests/runtime/test_frame_relay.py holds the two equal frame by frame and state by state.

Built by setuptools with Cython when the runtime is installed (`runtime/pyproject.toml`); where
it could not be built, the worker runs the Python path alone (`worker/native_relays.py`).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.stdio cimport snprintf
from libc.string cimport memcmp, memcpy
from picows.picows cimport WSFrame, WSMsgType, WSTransport

from switchboard_runtime import events

cdef enum:
    # telephony.MAX_FRAME_BYTES: a longer phone frame is ignored there.
    PHONE_FRAME_BYTES = 65536
    # Deeper documents are left to orjson (its own limit is 1024).
    MAX_DEPTH = 32
    # A longer number, or a longer exponent, is left to orjson (it refuses numbers out of range).
    MAX_NUMBER_CHARS = 15
    MAX_EXPONENT_DIGITS = 2

cdef enum Kind:
    ABSENT
    STRING
    JSON_NULL
    OBJECT
    OTHER


cdef struct Field:
    const char* name
    Py_ssize_t name_size
    Field* children  # the fields wanted inside this one when its value is an object
    int children_count
    int count  # how many times the key appeared (orjson keeps the last; we take only one)
    Kind kind
    Py_ssize_t at  # a string's first character
    Py_ssize_t size  # a string's length


cdef struct Scan:
    const unsigned char* text
    Py_ssize_t size
    Py_ssize_t at


cdef void want(Field* field, const char* name, Field* children, int children_count) noexcept:
    field.name = name
    field.name_size = len(name)
    field.children = children
    field.children_count = children_count
    field.count = 0
    field.kind = ABSENT
    field.at = field.size = 0


cdef void skip_space(Scan* scan) noexcept:
    cdef unsigned char c
    while scan.at < scan.size:
        c = scan.text[scan.at]
        if c != b' ' and c != b'\t' and c != b'\n' and c != b'\r':
            return
        scan.at += 1


cdef bint string(Scan* scan, Py_ssize_t* at, Py_ssize_t* size) noexcept:
    """A string of printable ASCII with no escapes; `scan` on its opening quote."""
    cdef unsigned char c
    scan.at += 1
    at[0] = scan.at
    while scan.at < scan.size:
        c = scan.text[scan.at]
        if c == b'"':
            size[0] = scan.at - at[0]
            scan.at += 1
            return True
        if c < 0x20 or c >= 0x80 or c == b'\\':
            return False
        scan.at += 1
    return False


cdef Py_ssize_t digits(Scan* scan) noexcept:
    cdef Py_ssize_t start = scan.at
    while scan.at < scan.size and b'0' <= scan.text[scan.at] <= b'9':
        scan.at += 1
    return scan.at - start


cdef bint number(Scan* scan) noexcept:
    """-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?, short enough to be in range."""
    cdef Py_ssize_t start = scan.at, whole
    if scan.at < scan.size and scan.text[scan.at] == b'-':
        scan.at += 1
    whole = digits(scan)
    if whole == 0 or (whole > 1 and scan.text[scan.at - whole] == b'0'):
        return False
    if scan.at < scan.size and scan.text[scan.at] == b'.':
        scan.at += 1
        if digits(scan) == 0:
            return False
    if scan.at < scan.size and (scan.text[scan.at] == b'e' or scan.text[scan.at] == b'E'):
        scan.at += 1
        if scan.at < scan.size and (scan.text[scan.at] == b'+' or scan.text[scan.at] == b'-'):
            scan.at += 1
        if not 0 < digits(scan) <= MAX_EXPONENT_DIGITS:
            return False
    return scan.at - start <= MAX_NUMBER_CHARS


cdef bint word(Scan* scan, const char* literal, Py_ssize_t size) noexcept:
    if scan.size - scan.at < size or memcmp(scan.text + scan.at, literal, size) != 0:
        return False
    scan.at += size
    return True


cdef bint value(Scan* scan, int depth, Field* field) noexcept:
    """One JSON value at `scan`; recorded in `field` when it is one we want (else NULL)."""
    cdef Py_ssize_t at = 0, size = 0
    cdef unsigned char c
    cdef Kind kind = OTHER
    if scan.at >= scan.size:
        return False
    c = scan.text[scan.at]
    if c == b'"':
        if not string(scan, &at, &size):
            return False
        kind = STRING
    elif c == b'{':
        if field != NULL:
            if not members(scan, depth + 1, field.children, field.children_count):
                return False
        elif not members(scan, depth + 1, NULL, 0):
            return False
        kind = OBJECT
    elif c == b'[':
        if not items(scan, depth + 1):
            return False
    elif c == b'n':
        if not word(scan, "null", 4):
            return False
        kind = JSON_NULL
    elif c == b't':
        if not word(scan, "true", 4):
            return False
    elif c == b'f':
        if not word(scan, "false", 5):
            return False
    elif not number(scan):
        return False
    if field != NULL:
        field.kind, field.at, field.size = kind, at, size
    return True


cdef Field* wanted(Field* fields, int count, const unsigned char* key, Py_ssize_t size) noexcept:
    cdef int i
    for i in range(count):
        if fields[i].name_size == size and memcmp(fields[i].name, key, size) == 0:
            return &fields[i]
    return NULL


cdef enum Container:
    BROKEN = -1  # not JSON (or deeper than we read)
    MORE = 0  # an item follows
    CLOSED = 1  # the object or array ended


cdef Container opened(Scan* scan, int depth, unsigned char closing) noexcept:
    """`scan` on an object's `{` or an array's `[`: past it, and whether it is empty."""
    if depth > MAX_DEPTH:
        return BROKEN
    scan.at += 1
    skip_space(scan)
    if scan.at < scan.size and scan.text[scan.at] == closing:
        scan.at += 1
        return CLOSED
    return MORE


cdef Container after_item(Scan* scan, unsigned char closing) noexcept:
    """Past an item: the `,` before the next one, or the end."""
    skip_space(scan)
    if scan.at >= scan.size:
        return BROKEN
    if scan.text[scan.at] == closing:
        scan.at += 1
        return CLOSED
    if scan.text[scan.at] != b',':
        return BROKEN
    scan.at += 1
    skip_space(scan)
    return MORE


cdef bint members(Scan* scan, int depth, Field* fields, int count) noexcept:
    """An object, `scan` on its `{`; the keys in `fields` recorded."""
    cdef Py_ssize_t key_at = 0, key_size = 0
    cdef Field* field
    cdef Container state = opened(scan, depth, b'}')
    while state == MORE:
        if scan.at >= scan.size or scan.text[scan.at] != b'"':
            return False
        if not string(scan, &key_at, &key_size):
            return False
        field = wanted(fields, count, scan.text + key_at, key_size)
        if field != NULL:
            field.count += 1
        skip_space(scan)
        if scan.at >= scan.size or scan.text[scan.at] != b':':
            return False
        scan.at += 1
        skip_space(scan)
        if not value(scan, depth, field):
            return False
        state = after_item(scan, b'}')
    return state == CLOSED


cdef bint items(Scan* scan, int depth) noexcept:
    """An array, `scan` on its `[`."""
    cdef Container state = opened(scan, depth, b']')
    while state == MORE:
        if not value(scan, depth, NULL):
            return False
        state = after_item(scan, b']')
    return state == CLOSED


cdef bint json_object(const char* text, Py_ssize_t size, Field* fields, int count) noexcept:
    """Whether `text` is one JSON object (and only that) as we read it; its wanted keys recorded."""
    cdef Scan scan
    scan.text, scan.size, scan.at = <const unsigned char*>text, size, 0
    skip_space(&scan)
    if scan.at >= scan.size or scan.text[scan.at] != b'{':
        return False
    if not members(&scan, 1, fields, count):
        return False
    skip_space(&scan)
    return scan.at == scan.size


cdef bint is_string(Field* field, const char* text, const char* expected) noexcept:
    cdef Py_ssize_t size = len(expected)
    return (
        field.count == 1
        and field.kind == STRING
        and field.size == size
        and memcmp(text + field.at, expected, size) == 0
    )


cdef bint once_text_or_null(Field* field) noexcept:
    """Absent, or there once as a string or null (what `_text_or_none` takes)."""
    return field.count == 0 or (field.count == 1 and (field.kind == STRING or field.kind == JSON_NULL))


cdef inline bint base64_letter(unsigned char c) noexcept:
    return (
        (b'A' <= c <= b'Z') or (b'a' <= c <= b'z') or (b'0' <= c <= b'9') or c == b'+' or c == b'/'
    )


cdef bint strict_base64(const unsigned char* text, Py_ssize_t size) noexcept:
    """Canonical base64 (padded, bits past the data zero): a subset of what
    `binascii.a2b_base64(strict_mode=True)` accepts."""
    cdef Py_ssize_t i, data = size
    if size == 0 or size % 4 != 0:
        return False
    if text[size - 1] == b'=':
        data = size - 2 if text[size - 2] == b'=' else size - 1
    for i in range(data):
        if not base64_letter(text[i]):
            return False
    for i in range(data, size):
        if text[i] != b'=':
            return False
    if data == size - 2:  # one byte of data in the last quantum: 4 bits of padding
        return sextet(text[data - 1]) & 0x0F == 0
    if data == size - 1:  # two bytes: 2 bits
        return sextet(text[data - 1]) & 0x03 == 0
    return True


cdef inline int sextet(unsigned char c) noexcept:
    if b'A' <= c <= b'Z':
        return c - ord('A')
    if b'a' <= c <= b'z':
        return c - ord('a') + 26
    if b'0' <= c <= b'9':
        return c - ord('0') + 52
    return 62 if c == b'+' else 63


cdef bint caller_media(const char* text, Py_ssize_t size, Py_ssize_t* at, Py_ssize_t* length) noexcept:
    """Whether `text` is a media frame of the caller's audio that `parse_phone_frame` reads as
    `Media(payload)` with a payload we can copy as it is; where the payload is."""
    cdef Field media_fields[2]
    cdef Field fields[2]
    cdef Field* track = &media_fields[0]
    cdef Field* payload = &media_fields[1]
    want(&media_fields[0], "track", NULL, 0)
    want(&media_fields[1], "payload", NULL, 0)
    want(&fields[0], "event", NULL, 0)
    want(&fields[1], "media", media_fields, 2)
    if size > PHONE_FRAME_BYTES or not json_object(text, size, fields, 2):
        return False
    if not is_string(&fields[0], text, "media") or fields[1].count != 1:
        return False
    if fields[1].kind != OBJECT:
        return False
    if track.count != 0 and not (
        is_string(track, text, "inbound") or is_string(track, text, "inbound_track")
    ):
        return False
    if payload.count != 1 or payload.kind != STRING:
        return False
    if not strict_base64(<const unsigned char*>text + payload.at, payload.size):
        return False
    at[0], length[0] = payload.at, payload.size
    return True


cdef struct Delta:
    Py_ssize_t at
    Py_ssize_t size
    Py_ssize_t response_at  # -1: no response id (absent, null or empty)
    Py_ssize_t response_size


cdef bint audio_delta(const char* text, Py_ssize_t size, Delta* delta) noexcept:
    """Whether `text` is an audio delta `events.parse_audio_delta` takes; where its parts are."""
    cdef Field fields[5]
    cdef int i
    want(&fields[0], "type", NULL, 0)
    want(&fields[1], "delta", NULL, 0)
    want(&fields[2], "response_id", NULL, 0)
    want(&fields[3], "item_id", NULL, 0)
    want(&fields[4], "event_id", NULL, 0)
    if not json_object(text, size, fields, 5):
        return False
    if not is_string(&fields[0], text, "response.output_audio.delta"):
        return False
    if fields[1].count != 1 or fields[1].kind != STRING:
        return False
    for i in range(2, 5):
        if not once_text_or_null(&fields[i]):
            return False
    delta.at, delta.size = fields[1].at, fields[1].size
    delta.response_at, delta.response_size = -1, 0
    if fields[2].count == 1 and fields[2].kind == STRING and fields[2].size > 0:
        delta.response_at, delta.response_size = fields[2].at, fields[2].size
    return True


cdef bytes joined(const char** parts, Py_ssize_t* sizes, int count):
    """The parts, one after the other, as one bytes object."""
    cdef Py_ssize_t total = 0, at = 0
    cdef int i
    for i in range(count):
        total += sizes[i]
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* into = PyBytes_AS_STRING(out)
    for i in range(count):
        memcpy(into + at, parts[i], sizes[i])
        at += sizes[i]
    return out


cdef bint whole_message(object socket, Py_ssize_t size) except -1:
    """`MessageListener.read_data_frame` would hand a whole text frame of `size` bytes on as
    it is (no fragmented message open, within the bound)."""
    return socket.fragments is None and size <= socket.max_message_bytes


cdef bint reader_parked(object queued, object reader) except -1:
    """`MessageListener.reader_parked`."""
    return len(queued) == 0 and reader is not None and not reader.done()


cdef bint peer_reading(object socket) except -1:
    """`MessageListener.peer_reading`."""
    writable = socket.writable
    return writable is None or writable.is_set()


cdef bint phone_open(object phone) except -1:
    """`MediaSocket.open`."""
    return phone.transport is not None and not phone.disconnected and not phone.close_sent


cdef bint xai_open(object xai) except -1:
    """`PicowsRealtimeSocket.open`."""
    return xai.transport is not None and not xai.disconnected and xai.close_sent is None


cdef object TEXT = WSMsgType.TEXT


cdef int write(object transport, bytes message) except -1:
    """One text frame to a socket's picows transport (or, in tests, a stand-in for one)."""
    if isinstance(transport, WSTransport):
        (<WSTransport>transport).send(WSMsgType.TEXT, message)
    else:
        transport.send(TEXT, message)
    return 0


cdef bytes APPEND_HEAD = (
    b'{"type":"input_audio_buffer.append","event_id":"' + events.EVENT_ID_PREFIX.encode()
)
cdef bytes APPEND_MIDDLE = b'","audio":"'
cdef bytes APPEND_TAIL = b'"}'


cdef class Relay:
    """One of a bridged call's sockets' relays (`relay` is what its frame callback tries)."""

    cdef object phone, xai, session, stats
    cdef readonly unsigned long long relayed  # frames this relay took

    def __init__(self, phone, xai, session, stats):
        self.phone, self.xai, self.session, self.stats = phone, xai, session, stats

    cpdef bint relay(self, WSFrame frame) except -1:
        """True: relayed, nothing left to do; False: nothing done, the Python path's."""
        if frame.msg_type != WSMsgType.TEXT or not frame.fin:
            return False
        return self.take(frame.payload_ptr, frame.payload_size)

    def relay_text(self, bytes message):
        """`relay` of a whole text frame holding `message` (picows' frames cannot be built
        outside picows: for tests and bench/relay_path.py)."""
        return self.take(message, len(message))

    cdef bint take(self, const char* text, Py_ssize_t size) except -1:
        return False


cdef class CallerAudio(Relay):
    """The phone's socket's relay: a caller's media frame to xAI, as `caller_frame_now` sends
    it (`session.send_audio_now`) when nothing makes it wait or take another way."""

    cdef bint heard  # the session's `caller_heard` was set (it is never cleared)

    cdef bint take(self, const char* text, Py_ssize_t size) except -1:
        cdef Py_ssize_t at = 0, length = 0
        cdef const char* parts[5]
        cdef Py_ssize_t sizes[5]
        cdef char number[24]
        phone, session, xai = self.phone, self.session, self.xai
        if not whole_message(phone, size) or phone.close_sent:
            return False
        if phone.take_now is None or not reader_parked(phone.inbox, phone.waiter):
            return False
        if not caller_media(text, size, &at, &length):
            return False
        # session.send_audio_now: sent at once only once set-up is over and xAI reads; the
        # caller already heard (its event set by an earlier frame, on the Python path).
        if session.ended is not None or session._held_audio is not None:
            return False
        if session._send_now is None:
            return False
        if not self.heard:
            if not session.caller_heard.is_set():
                return False
            self.heard = True
        if not xai_open(xai) or not peer_reading(xai):
            return False
        # `events.next_event_id()`: the next number from the same counter.
        parts[0], sizes[0] = APPEND_HEAD, len(APPEND_HEAD)
        parts[1] = number
        sizes[1] = snprintf(number, sizeof(number), "%lld", <long long>next(events.EVENT_IDS))
        parts[2], sizes[2] = APPEND_MIDDLE, len(APPEND_MIDDLE)
        parts[3], sizes[3] = text + at, length
        parts[4], sizes[4] = APPEND_TAIL, len(APPEND_TAIL)
        write(xai.transport, joined(parts, sizes, 5))
        self.stats.frames_in += 1
        self.relayed += 1
        return True


cdef class AgentAudio(Relay):
    """The xAI socket's relay: an agent's audio delta to the phone, as the session's `_take_now`
    plays it (`_audio`, `_play`, the bridge's `play_now`) when nothing makes it wait or take
    another way: not the call's first audio (that one is timed), not a cancelled response's."""

    cdef bytes head, tail

    def __init__(self, phone, xai, session, stats, bytes head, bytes tail):
        """`head` + payload + `tail` is the dialect's media frame to this call's phone."""
        Relay.__init__(self, phone, xai, session, stats)
        self.head, self.tail = head, tail

    cdef bint take(self, const char* text, Py_ssize_t size) except -1:
        cdef Delta delta
        cdef const char* parts[3]
        cdef Py_ssize_t sizes[3]
        phone, session, xai = self.phone, self.session, self.xai
        if not whole_message(xai, size):
            return False
        if xai.take_now is None or not reader_parked(xai.messages, xai.readable):
            return False
        if session.ended is not None or not audio_delta(text, size, &delta):
            return False
        if delta.response_at < 0:
            response = session._active_response
        else:
            response = PyUnicode_DecodeASCII(text + delta.response_at, delta.response_size, NULL)
        if response in session._cancelled or session.telemetry.time_to_first_audio_ms is None:
            return False
        # session._play: straight to the phone only while its player waits with nothing queued
        # and the phone reads; the call's first frame out is timed on the Python path.
        if session.play_now is None or not session._player_parked:
            return False
        if not session._outbound.empty() or self.stats.frames_out < 1:
            return False
        if not phone_open(phone) or not peer_reading(phone):
            return False
        session._audio_since_clear = True
        parts[0], sizes[0] = self.head, len(self.head)
        parts[1], sizes[1] = text + delta.at, delta.size
        parts[2], sizes[2] = self.tail, len(self.tail)
        write(phone.transport, joined(parts, sizes, 3))
        self.stats.frames_out += 1
        self.relayed += 1
        return True


def caller_payload(bytes frame):
    """The payload `CallerAudio` would relay from `frame`, or None: for tests."""
    cdef Py_ssize_t at = 0, size = 0
    if not caller_media(frame, len(frame), &at, &size):
        return None
    return frame[at:at + size].decode("ascii")


def agent_delta(bytes frame):
    """(delta, response id or None) `AgentAudio` would relay from `frame`, or None: for tests."""
    cdef Delta delta
    if not audio_delta(frame, len(frame), &delta):
        return None
    response = None
    if delta.response_at >= 0:
        response = frame[delta.response_at:delta.response_at + delta.response_size].decode("ascii")
    return frame[delta.at:delta.at + delta.size].decode("ascii"), response
