# cython: language_level=3, boundscheck=False, wraparound=False
"""The media relay with no Python per frame: the floor under `bench/socket_layers.py`'s
`picows-relay`, which does the same in Python callbacks.

Per phone connection a picows client to the xAI stand-in, as there. A Twilio frame's payload is
found by scanning for its key (no JSON parse, no base64 check, no object per frame but the frame
written) and copied into an `input_audio_buffer.append`; an audio delta's into a Twilio media
frame; each written with one call into picows' C API. What is left is what any relay on these
sockets pays: picows' framing, uvloop and the kernel. socket_layers builds this module with
Cython on first use (benchmark only: nothing of the product imports it).
"""

import asyncio

import picows

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.string cimport memcpy
from picows.picows cimport WSFrame, WSListener, WSMsgType, WSTransport

cdef bytes PAYLOAD_KEY = b'"payload"'
cdef bytes DELTA_KEY = b'"delta"'
cdef bytes EVENT_KEY = b'"event"'
cdef bytes TYPE_KEY = b'"type"'
cdef bytes AUDIO_DELTA = b"response.output_audio.delta"
cdef bytes DELTA_TYPE = b'"type":"response.output_audio.delta"'
cdef bytes APPEND_HEAD = b'{"type":"input_audio_buffer.append","audio":"'
cdef bytes APPEND_TAIL = b'"}'
cdef bytes MEDIA_HEAD = b'{"event":"media","streamSid":"MZ1","media":{"payload":"'
cdef bytes MEDIA_TAIL = b'"}}'
# A wrapped frame larger than this is dropped (the stand-ins send ~300 bytes).
cdef enum:
    MAX_OUT = 8192


cdef Py_ssize_t find(const char* text, Py_ssize_t size, bytes needle) noexcept:
    """Where `needle` starts in `text`, or -1."""
    cdef const char* wanted = needle
    cdef Py_ssize_t length = len(needle)
    cdef Py_ssize_t at, matched
    for at in range(size - length + 1):
        matched = 0
        while matched < length and text[at + matched] == wanted[matched]:
            matched += 1
        if matched == length:
            return at
    return -1


cdef Py_ssize_t string_value(const char* text, Py_ssize_t size, bytes key, Py_ssize_t* length) noexcept:
    """Where the string value of `key` (quotes included) starts, its length in `length`; -1 when
    there is none or it holds an escape."""
    cdef Py_ssize_t at = find(text, size, key)
    cdef Py_ssize_t end
    if at < 0:
        return -1
    at += len(key)
    while at < size and (text[at] == b' ' or text[at] == b':'):
        at += 1
    if at >= size or text[at] != b'"':
        return -1
    at += 1
    end = at
    while end < size and text[end] != b'"':
        if text[end] == b'\\':
            return -1
        end += 1
    if end >= size:
        return -1
    length[0] = end - at
    return at


cdef object wrapped(bytes head, const char* body, Py_ssize_t body_size, bytes tail):
    """head + body + tail as one bytes object (None when too large)."""
    cdef char out[MAX_OUT]
    cdef Py_ssize_t head_size = len(head), tail_size = len(tail)
    if head_size + body_size + tail_size > MAX_OUT:
        return None
    memcpy(out, <const char*>head, head_size)
    memcpy(out + head_size, body, body_size)
    memcpy(out + head_size + body_size, <const char*>tail, tail_size)
    return PyBytes_FromStringAndSize(out, head_size + body_size + tail_size)


cdef bint relay(WSFrame frame, bytes key, bytes head, bytes tail, WSTransport to):
    """The string value of `key` in `frame`, written to `to` between `head` and `tail` (False:
    nothing written)."""
    cdef Py_ssize_t length = 0
    cdef Py_ssize_t at = string_value(frame.payload_ptr, frame.payload_size, key, &length)
    if at < 0:
        return False
    out = wrapped(head, frame.payload_ptr + at, length, tail)
    if out is None:
        return False
    to.send(WSMsgType.TEXT, out)
    return True


cdef bint value_is(WSFrame frame, bytes key, bytes value) noexcept:
    """Whether `key`'s string value in `frame` is `value`."""
    cdef Py_ssize_t length = 0
    cdef Py_ssize_t at = string_value(frame.payload_ptr, frame.payload_size, key, &length)
    cdef const char* wanted = value
    cdef Py_ssize_t i
    if at < 0 or length != len(value):
        return False
    for i in range(length):
        if frame.payload_ptr[at + i] != wanted[i]:
            return False
    return True


cdef bint relay_message(
    WSFrame frame, bytes kind_key, bytes kind, bytes key, bytes head, bytes tail, WSTransport to
):
    """A whole text message whose `kind_key` is `kind`: the value of `key` written to `to`
    between `head` and `tail`. False, nothing written, for any other frame."""
    if frame.msg_type != WSMsgType.TEXT or not frame.fin or not value_is(frame, kind_key, kind):
        return False
    return relay(frame, key, head, tail, to)


cpdef bint relay_caller(WSFrame frame, WSTransport to):
    """A phone's media frame: its payload to xAI (`to`) as an `input_audio_buffer.append`."""
    return relay_message(frame, EVENT_KEY, b"media", PAYLOAD_KEY, APPEND_HEAD, APPEND_TAIL, to)


cpdef bint relay_delta(WSFrame frame, WSTransport to, bytes head, bytes tail):
    """An xAI audio delta: its audio to the phone (`to`) between the call's `head` and `tail`."""
    return relay_message(frame, TYPE_KEY, AUDIO_DELTA, DELTA_KEY, head, tail, to)


cdef class XaiSide(WSListener):
    """The relay's client socket to the xAI stand-in: audio deltas go on to the phone."""

    cdef PhoneSide phone

    def __init__(self, PhoneSide phone):
        self.phone = phone

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        if frame.msg_type != WSMsgType.TEXT or self.phone.transport is None:
            return
        if find(frame.payload_ptr, frame.payload_size, DELTA_TYPE) >= 0:
            relay(frame, DELTA_KEY, MEDIA_HEAD, MEDIA_TAIL, self.phone.transport)


cdef class PhoneSide(WSListener):
    """A phone's connection: its audio goes on to its own xAI stand-in connection."""

    cdef WSTransport transport
    cdef WSTransport upstream
    cdef str upstream_url

    def __init__(self, str upstream_url):
        self.upstream_url = upstream_url

    cpdef on_ws_connected(self, WSTransport transport):
        self.transport = transport
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self):
        self.upstream, _ = await picows.ws_connect(lambda: XaiSide(self), self.upstream_url)

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            if self.upstream is not None:
                self.upstream.disconnect()
            return
        if frame.msg_type == WSMsgType.TEXT and self.upstream is not None:
            relay(frame, PAYLOAD_KEY, APPEND_HEAD, APPEND_TAIL, self.upstream)
