"""The worker's media plane (`switchboard_runtime.worker.media_plane`): call sockets on a
listener of their own.

Every other call suite already runs on it (the test stack gives its worker a media plane, as
`switchboard worker` does); these show that calls run on it, and the same through Starlette
when the app has none, that frames that arrive while a call is still being set up are not
lost, that a phone that sends faster than its call reads is held back by TCP rather than
buffered without bound, that audio streams are not compressed, that an ended call is let go at
once, and how a worker stops: a call it cuts ends as `worker_shutdown`, a drain lets calls
finish, and the streams of calls it answered just before still get in.
"""

import asyncio
import base64
import contextlib
import dataclasses
import gc
import json
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from switchboard_runtime import client as control_plane_client
from switchboard_runtime.session import GrokRealtimeSession, MemoryTelemetrySink
from switchboard_runtime.telephony import Dialect, PhoneGone
from switchboard_runtime.worker import calls, media_plane, serving, streams
from switchboard_runtime.worker.capacity import CallCapacity
from switchboard_runtime.worker.media_plane import FrameLimits, MediaPlane, MediaSocket
from tests.fakes.server import BackgroundServer
from tests.integration.callstack import (
    CALLER_FRAMES,
    Answer,
    Phone,
    Stack,
    StackOptions,
    answer_twilio,
    assert_audio_passes_untouched,
    build_stack,
    phone_call,
    poll,
    wait_for_report,
)
from tests.integration.test_browser_calls import (
    AGENT_AUDIO,
    SILENCE,
    Browser,
    acme_token,
    mint,
    open_call,
    tone,
)
from tests.integration.test_warm_start import metrics
from tests.integration.test_worker_frames import close_code_after


def spy_on_bridged_sockets(
    monkeypatch: pytest.MonkeyPatch, waiting: list[int] | None = None
) -> list[Any]:
    """The socket each phone call was bridged on (and in `waiting`, how many of its frames
    were waiting to be read when the bridge began)."""
    sockets: list[Any] = []
    real = calls.bridge

    async def recording(phone: Any, *args: Any) -> Any:
        sockets.append(phone)
        if waiting is not None and isinstance(phone, MediaSocket):
            waiting.append(len(phone.inbox))
        return await real(phone, *args)

    monkeypatch.setattr(calls, "bridge", recording)
    return sockets


async def a_full_call(stack: Stack, kind: str) -> None:
    """Caller audio reaches xAI byte for byte and in order, xAI's reaches the phone likewise."""
    async for phone in phone_call(stack, kind):
        await assert_audio_passes_untouched(stack, phone)
        await phone.hang_up()
    await wait_for_report(stack)
    report = stack.telemetry.reports[-1]
    assert (report.end_reason, report.completed) == ("phone_stop", True)


@pytest.mark.parametrize("kind", ["twilio", "telnyx"])
async def test_a_call_runs_on_the_media_plane(
    stack: Stack, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sockets = spy_on_bridged_sockets(monkeypatch)
    await a_full_call(stack, kind)
    assert [type(s) for s in sockets] == [MediaSocket]


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled-relay", "python-only"])
async def test_paced_frames_are_relayed_in_the_socket_callbacks_in_order(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, compiled: bool
) -> None:
    """Frames 20 ms apart, as phones and xAI send them: most go straight through inside the
    socket callbacks, both ways (by the compiled relay, or without it by the Python path),
    and every byte still arrives in order (the guards that keep the order:
    tests/unit/test_relay_in_callback.py and tests/unit/test_frame_relay.py)."""
    relayed = {"caller": 0, "agent": 0}
    send_audio_now, take_now = GrokRealtimeSession.send_audio_now, GrokRealtimeSession._take_now

    def counted_send(self: GrokRealtimeSession, payload: str) -> bool:
        sent = send_audio_now(self, payload)
        relayed["caller"] += sent and self._held_audio is None
        return sent

    def counted_take(self: GrokRealtimeSession, raw: str | bytes) -> bool:
        taken = take_now(self, raw)
        relayed["agent"] += taken
        return taken

    compiled_relays: list[Any] = []
    with_relays = calls.native_frame_relays

    @contextlib.contextmanager
    def recorded(module: Any, phone: Any, *args: Any) -> Iterator[Any]:
        with with_relays(module if compiled else None, phone, *args) as relays:
            compiled_relays.append(relays)
            yield relays

    monkeypatch.setattr(GrokRealtimeSession, "send_audio_now", counted_send)
    monkeypatch.setattr(GrokRealtimeSession, "_take_now", counted_take)
    monkeypatch.setattr(calls, "native_frame_relays", recorded)
    # Half a second of agent audio: a host that holds the worker up for a few frames' time
    # (CI's, busy) queues those, not most of the reply.
    stack.xai.reply_audio = [bytes([i + 1]) * 160 for i in range(25)]
    stack.xai.delta_interval = 0.02
    async for phone in phone_call(stack, "twilio"):
        await phone.speak(CALLER_FRAMES[:1])
        await poll(
            lambda: bool(
                stack.xai.connections
                and stack.xai.connections[-1].of_type("input_audio_buffer.append")
            )
        )
        for frame in CALLER_FRAMES[1:]:
            await asyncio.sleep(0.02)
            await phone.speak([frame])
        expected = [base64.b64encode(chunk).decode() for chunk in stack.xai.reply_audio]
        await phone.collect(lambda p, n=len(expected): len(p.media()) >= n)
        assert phone.media() == expected
        appended = stack.xai.connections[-1].of_type("input_audio_buffer.append")
        assert [event["audio"] for event in appended] == CALLER_FRAMES
        await phone.hang_up()
    await wait_for_report(stack)
    counted = {
        (series.labels["direction"], series.labels["path"]): series.value
        for family in text_string_to_metric_families(metrics(stack.worker))
        if family.name == "switchboard_worker_audio_frames"
        for series in family.samples
    }
    assert counted["caller", "compiled"] + counted["caller", "python"] == len(CALLER_FRAMES)
    assert counted["agent", "compiled"] + counted["agent", "python"] == len(expected)
    if compiled:
        [(caller_relay, agent_relay)] = compiled_relays
        assert caller_relay.relayed > 0 and agent_relay.relayed > 0
        assert (counted["caller", "compiled"], counted["agent", "compiled"]) == (
            caller_relay.relayed,
            agent_relay.relayed,
        )
        relayed["caller"] += caller_relay.relayed
        relayed["agent"] += agent_relay.relayed
    else:
        assert compiled_relays == [None]
        assert counted["caller", "compiled"] == counted["agent", "compiled"] == 0
    # All but the frames that came while the call was still being set up, or in a burst.
    assert relayed["caller"] >= len(CALLER_FRAMES) - 1, relayed
    assert relayed["agent"] > len(expected) // 2, relayed


async def a_call_left_behind(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run a full call with the collector off: is its session still in memory 2 s after the
    call was reported? (Then only a reference cycle holds it, which a collection frees.)"""
    sessions: list[weakref.ref[GrokRealtimeSession]] = []
    real_init = GrokRealtimeSession.__init__

    def remembered(self: GrokRealtimeSession, **kwargs: Any) -> None:
        sessions.append(weakref.ref(self))
        real_init(self, **kwargs)

    monkeypatch.setattr(GrokRealtimeSession, "__init__", remembered)
    gc.collect()
    gc.disable()
    try:
        await a_full_call(stack, "twilio")
        with contextlib.suppress(TimeoutError):
            await poll(lambda: all(ref() is None for ref in sessions), seconds=2)
        left = any(ref() is not None for ref in sessions)
    finally:
        gc.enable()
    gc.collect()
    assert len(sessions) == 1 and sessions[0]() is None  # a cycle at most, never a leak
    return left


async def test_an_ended_call_is_freed_at_once_not_at_the_next_full_collection(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not await a_call_left_behind(stack, monkeypatch)


@pytest.fixture
def starlette_stack(tmp_path: Path) -> Iterator[Stack]:
    """A worker app without a media plane, under uvicorn's own WebSocket defaults, as under a
    host backend's own ASGI server."""
    uvicorn_defaults = {"ws": "websockets-sansio", "ws_per_message_deflate": True}
    options = StackOptions(media_plane=False, worker_websockets=uvicorn_defaults)
    yield from build_stack(tmp_path, options)


async def test_without_a_media_plane_the_call_reads_through_starlette(
    starlette_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    sockets = spy_on_bridged_sockets(monkeypatch)
    await a_full_call(starlette_stack, "twilio")
    assert [type(s) for s in sockets] == [streams.StarletteSocket]


async def negotiated_extensions(stack: Stack) -> str | None:
    """What the worker answers a phone that offers permessage-deflate (websockets' client does,
    as browsers do)."""
    async with connect(stack.ws(f"/ws/twilio/{stack.agent_id}")) as websocket:
        assert websocket.request is not None and websocket.response is not None
        assert "permessage-deflate" in websocket.request.headers["Sec-WebSocket-Extensions"]
        answer: str | None = websocket.response.headers.get("Sec-WebSocket-Extensions")
        return answer


async def test_the_worker_does_not_compress_audio_streams(stack: Stack) -> None:
    assert await negotiated_extensions(stack) is None


async def test_under_uvicorns_defaults_every_frame_would_be_compressed(
    starlette_stack: Stack,
) -> None:
    answer = await negotiated_extensions(starlette_stack)
    assert answer is not None and answer.startswith("permessage-deflate")


@pytest.fixture
def cold_stack(tmp_path: Path) -> Iterator[Stack]:
    """Calls start cold: the bridge begins only after the session config arrives."""
    yield from build_stack(tmp_path, StackOptions(warm_start=False))


def slowed(monkeypatch: pytest.MonkeyPatch, owner: type, method: str, seconds: float) -> None:
    """`owner.method` (a coroutine method) answers `seconds` late."""
    real = getattr(owner, method)

    async def late(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(seconds)
        return await real(*args, **kwargs)

    monkeypatch.setattr(owner, method, late)


def slow_session_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control plane answers the session config 300 ms late: the caller is already talking."""
    slowed(monkeypatch, control_plane_client.ControlPlaneClient, "session_config", 0.3)


async def test_frames_that_came_while_the_call_was_set_up_are_bridged_first_and_in_order(
    cold_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_session_config(monkeypatch)
    waiting: list[int] = []
    spy_on_bridged_sockets(monkeypatch, waiting)
    await a_full_call(cold_stack, "twilio")  # speaks at once, while the config is on its way
    assert len(waiting) == 1 and waiting[0] >= 1  # they waited in the inbox, and went first


# --- the listener alone -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def listener(
    phone: Any, handshake_timeout_seconds: float | None = 5.0, limit: int = 1024
) -> AsyncIterator[MediaPlane]:
    """A media plane alone, its phone streams served by `phone`."""
    plane = MediaPlane(
        host="127.0.0.1",
        port=0,
        limits=FrameLimits(limit, limit),
        handshake_timeout_seconds=handshake_timeout_seconds,
        trusted_proxies=(),
        phone=phone,
        browser=not_called,
    )
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()


class SlowReader:
    """A phone handler that does not read until the phone has sent it all; then reads
    everything, and answers once the phone has gone."""

    def __init__(self) -> None:
        self.sent_all = asyncio.Event()
        self.buffered_before_reading = -1
        self.paused_before_reading = False
        self.read: list[int] = []
        self.send_after_hang_up: str = ""

    async def __call__(self, phone: Any, _dialect: Dialect, _agent: str, _token: Any) -> None:
        await self.sent_all.wait()
        await asyncio.sleep(0.2)  # whatever is on its way arrives (or waits in TCP)
        self.buffered_before_reading = len(phone.inbox)
        self.paused_before_reading = phone.read_paused
        while (frame := await phone.receive()) is not None:
            self.read.append(json.loads(frame)["n"])
        try:
            await phone.send_text("anyone there?")
        except PhoneGone:
            self.send_after_hang_up = "PhoneGone"


FLOOD = 20_000  # ~1 MB of small frames: fits in loopback's TCP buffers either way


async def not_called(*_args: Any) -> None:
    raise AssertionError("no browser call here")


async def flood(reader: SlowReader) -> None:
    async with (
        listener(reader) as plane,
        connect(f"{plane.url}/ws/twilio/agent_x") as websocket,
    ):
        for n in range(FLOOD):
            await websocket.send(json.dumps({"n": n}))
        reader.sent_all.set()
        await poll(lambda: len(reader.read) >= FLOOD, seconds=20)
        await websocket.close()
        await poll(lambda: bool(reader.send_after_hang_up))


async def test_a_phone_faster_than_its_call_is_held_back_by_tcp_and_loses_nothing() -> None:
    reader = SlowReader()
    await flood(reader)
    # Reading stopped near INBOX_HIGH: what one socket read carries past it, no more.
    assert reader.paused_before_reading
    assert reader.buffered_before_reading < FLOOD / 4, reader.buffered_before_reading
    assert reader.read == list(range(FLOOD))  # all of it, in order, once the call read on
    assert reader.send_after_hang_up == "PhoneGone"


async def test_without_the_inbox_bound_the_listener_buffers_whatever_the_phone_sends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(media_plane, "INBOX_HIGH", 10**9)
    reader = SlowReader()
    await flood(reader)
    assert not reader.paused_before_reading
    assert reader.buffered_before_reading == FLOOD
    assert reader.read == list(range(FLOOD))


async def reads_until_gone(phone: Any, *_route: Any) -> None:
    while await phone.receive() is not None:
        pass


async def silent_connection_lasts(handshake_timeout_seconds: float | None) -> float:
    """Connect over TCP and send nothing: how long until the listener drops the connection
    (at most 2 s waited)."""
    async with listener(reads_until_gone, handshake_timeout_seconds) as plane:
        reader, writer = await asyncio.open_connection("127.0.0.1", plane.port)
        began = asyncio.get_running_loop().time()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await reader.read()  # b"" once the listener closes
        writer.close()
        return asyncio.get_running_loop().time() - began


async def test_a_connection_that_never_sends_its_handshake_is_dropped() -> None:
    assert await silent_connection_lasts(0.3) < 1.5


async def test_without_the_handshake_timeout_a_silent_connection_stays() -> None:
    """The twin: with no timeout an idle connection would hold its place forever."""
    assert await silent_connection_lasts(None) >= 2


async def close_code_after_fragments(fragments: list[str], limit: int = 1024) -> int | None:
    """Send one message in fragments on a phone stream of a media plane alone."""
    async with listener(reads_until_gone, limit=limit) as plane:
        return await close_code_after(f"{plane.url}/ws/twilio/agent_x", fragments)


class RecordingTransport:
    """Stands in for picows' transport of a socket whose handshake just finished."""

    def __init__(self) -> None:
        self.closed_with: int | None = None
        self.disconnected = False

    def send_close(self, code: int, _reason: bytes = b"") -> None:
        self.closed_with = int(code)

    def disconnect(self) -> None:
        self.disconnected = True


def a_handshake_finishing_now(plane: MediaPlane) -> MediaSocket:
    """A phone stream's handshake completing on `plane` (picows' transport recorded)."""
    upgrade = type("Upgrade", (), {"path": b"/ws/twilio/agent_x"})()
    socket = plane.route(upgrade)
    assert isinstance(socket, MediaSocket)
    socket.transport = RecordingTransport()  # type: ignore[assignment]
    plane.begin(socket)
    return socket


async def test_a_handshake_that_finishes_after_the_stop_carries_no_call() -> None:
    async with listener(reads_until_gone) as plane:
        await plane.stop()
        transport = a_handshake_finishing_now(plane).transport
        assert isinstance(transport, RecordingTransport)
        assert transport.closed_with == 1012 and transport.disconnected
        assert not plane.calls


async def test_without_the_check_it_would_start_a_call_on_a_stopped_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with listener(reads_until_gone) as plane:
        await plane.stop()
        monkeypatch.setattr(MediaPlane, "stopped", property(lambda _plane: False))
        socket = a_handshake_finishing_now(plane)
        assert len(plane.calls) == 1
        call, socket.disconnected = plane.calls[socket], True
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call


async def test_a_message_in_fragments_is_bounded_as_a_whole() -> None:
    """Each fragment is under the limit; together they are not: 1009, as for one frame."""
    assert await close_code_after_fragments(["x" * 600, "x" * 600]) == 1009
    assert await close_code_after_fragments(["x" * 500, "x" * 500]) is None


async def test_without_a_limit_on_the_whole_the_fragments_would_pile_up() -> None:
    assert await close_code_after_fragments(["x" * 600] * 20, limit=1 << 20) is None


async def test_text_that_is_not_utf8_closes_the_stream_with_1007() -> None:
    async with listener(reads_until_gone) as plane:
        reader, writer = await asyncio.open_connection("127.0.0.1", plane.port)
        writer.write(
            b"GET /ws/twilio/agent_x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await reader.readuntil(b"\r\n\r\n")
        payload, mask = b"\xff\xfe", b"\x01\x02\x03\x04"
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)  # a masked text frame
        close = await reader.read(4)
        writer.close()
    assert close[0] == 0x88 and int.from_bytes(close[2:4], "big") == 1007


def replica(stack: Stack, **settings: Any) -> tuple[BackgroundServer, Stack]:
    """Another worker replica on the stack's control plane, started; the stack as seen by it."""
    server, app = stack.worker_replica(**settings)
    server.start()
    return server, dataclasses.replace(stack, worker=server.base_url, worker_app=app)


async def stopped_mid_call(stack: Stack) -> tuple[int | None, str | None]:
    """A call on a worker replica that stops (SIGTERM) while the caller talks: how the phone's
    stream was closed. The replica must stop, with the call on it."""
    server, on_replica = replica(stack)
    try:
        async for phone in phone_call(on_replica, "twilio"):
            await assert_audio_passes_untouched(on_replica, phone)
            await asyncio.to_thread(server.stop)
            assert not server.thread.is_alive()
            closed = await phone.closed()
    finally:
        server.stop()
    await wait_for_report(stack)
    return closed


async def test_a_call_whose_worker_stops_ends_as_worker_shutdown(stack: Stack) -> None:
    """Without a drain time (the default) the call is ended at once, and says why."""
    assert await stopped_mid_call(stack) == (1000, "worker_shutdown")
    report = stack.telemetry.reports[-1]
    assert (report.end_reason, report.completed) == ("worker_shutdown", False)


def calls_not_told_of_the_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The media plane no longer hears how a call ends when the worker stops: it closes every
    socket at once (1012), as the HTTP server would."""
    monkeypatch.setattr(MediaSocket, "end_on_shutdown", lambda *_args: None)


async def test_closed_by_the_listener_alone_the_call_would_pass_for_a_hang_up(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls_not_told_of_the_stop(monkeypatch)
    assert await stopped_mid_call(stack) == (1012, media_plane.RESTARTING)
    report = stack.telemetry.reports[-1]
    assert (report.end_reason, report.completed) == ("caller_hangup", True)


async def reports_of_a_hang_up_just_before_the_stop(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> list[Any]:
    """A caller hangs up and the phone's socket is gone, but the call's report is still on its
    way when the worker stops: the reports that arrived."""
    # Every call report takes 1.5 s to reach the control plane: well inside the stop's 5 s grace.
    slowed(monkeypatch, MemoryTelemetrySink, "report", 1.5)
    server, on_replica = replica(stack)
    plane: MediaPlane = on_replica.worker_app.state.media_plane
    before = len(stack.telemetry.reports)
    try:
        async for phone in phone_call(on_replica, "twilio"):
            await assert_audio_passes_untouched(on_replica, phone)
            await phone.hang_up()
            assert await phone.closed() == (1000, "phone_stop")
        await poll(lambda: plane.open_sockets == 0)
        assert len(stack.telemetry.reports) == before  # the report is still on its way
        await asyncio.to_thread(server.stop)
    finally:
        server.stop()
    return stack.telemetry.reports[before:]


async def test_a_stopping_worker_waits_for_the_report_of_a_call_whose_phone_is_gone(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    [report] = await reports_of_a_hang_up_just_before_the_stop(stack, monkeypatch)
    assert (report.end_reason, report.completed) == ("phone_stop", True)


async def test_forgotten_when_its_phone_left_the_call_would_lose_its_report(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The media plane as it was: a socket left the plane's calls when its phone disconnected,
    so a stop did not wait for the call still reporting."""
    disconnected = MediaSocket.on_ws_disconnected

    def and_forgotten(self: MediaSocket, transport: Any) -> None:
        disconnected(self, transport)
        self.plane.forget(self)

    monkeypatch.setattr(MediaSocket, "on_ws_disconnected", and_forgotten)
    assert await reports_of_a_hang_up_just_before_the_stop(stack, monkeypatch) == []


async def until_it_stops_listening(url: str) -> None:
    async with asyncio.timeout(10), httpx.AsyncClient() as http:
        while True:
            try:
                await http.get(f"{url}/healthz", timeout=1)
            except httpx.TransportError:
                return
            await asyncio.sleep(0.05)


async def test_a_draining_worker_takes_no_new_connections_and_lets_its_calls_finish(
    stack: Stack,
) -> None:
    server, on_replica = replica(stack, worker_drain_seconds=30)
    try:
        async for phone in phone_call(on_replica, "twilio"):
            stopping = asyncio.create_task(asyncio.to_thread(server.stop))
            await until_it_stops_listening(on_replica.worker)
            await assert_audio_passes_untouched(on_replica, phone)  # the call goes on
            await phone.hang_up()
            assert await phone.closed() == (1000, "phone_stop")
        await asyncio.wait_for(stopping, 15)
        assert not server.thread.is_alive()  # it stopped once its last call ended
    finally:
        server.stop()
    await wait_for_report(stack)
    report = stack.telemetry.reports[-1]
    assert (report.end_reason, report.completed) == ("phone_stop", True)


async def test_a_drain_that_runs_out_ends_the_call_as_worker_shutdown(stack: Stack) -> None:
    server, on_replica = replica(stack, worker_drain_seconds=0.5)
    try:
        async for phone in phone_call(on_replica, "twilio"):
            await phone.speak(CALLER_FRAMES)
            stopping = asyncio.create_task(asyncio.to_thread(server.stop))
            assert await phone.closed() == (1000, "worker_shutdown")
        await asyncio.wait_for(stopping, 15)
    finally:
        server.stop()
    await wait_for_report(stack)
    assert stack.telemetry.reports[-1].end_reason == "worker_shutdown"


async def readiness(url: str) -> tuple[int, str]:
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{url}/readyz")
    return answer.status_code, answer.json()["status"]


def slow_claims(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The control plane takes `seconds` to redeem a stream token."""
    slowed(monkeypatch, control_plane_client.ControlPlaneClient, "claim_call", seconds)


@pytest.mark.parametrize("claim_seconds", [0.0, 0.5])
async def test_a_stopping_worker_takes_no_new_calls_but_the_streams_it_owes_get_in(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, claim_seconds: float
) -> None:
    """The webhook was answered just before the stop; the phone provider opens the stream a
    moment later. The worker is still listening for it, and for nothing else; the stream is
    still owed while its token is redeemed, so a slow redemption does not lose the call."""
    slow_claims(monkeypatch, claim_seconds)
    server, on_replica = replica(stack, worker_drain_seconds=30)
    try:
        owed = await answer_twilio(on_replica)
        assert owed.status == 200 and owed.stream_token
        stopping = asyncio.create_task(asyncio.to_thread(server.stop))
        async with asyncio.timeout(5):
            while await readiness(on_replica.worker) != (503, "stopping"):  # noqa: ASYNC110 - over HTTP
                await asyncio.sleep(0.05)
        refused = await answer_twilio(on_replica)  # to the fallback URL / another replica
        assert refused.status == 503 and "<Stream" not in refused.text
        async with connect(owed.stream_url) as websocket:
            phone = Phone("twilio", websocket)
            await phone.start({"stream_token": owed.stream_token})
            await assert_audio_passes_untouched(on_replica, phone)
            await phone.hang_up()
            assert await phone.closed() == (1000, "phone_stop")
        await asyncio.wait_for(stopping, 15)
        assert not server.thread.is_alive()
    finally:
        server.stop()
    await wait_for_report(stack)
    report = stack.telemetry.reports[-1]
    assert (report.end_reason, report.completed) == ("phone_stop", True)
    assert len(stack.xai.connections) == 1  # the refused webhook issued no call


async def answer_then_stop(
    server: BackgroundServer, on_replica: Stack
) -> tuple[Answer, asyncio.Task[None]]:
    """A webhook answered on the replica, then SIGTERM's stop begun (the stop, as a task)."""
    owed = await answer_twilio(on_replica)
    stopping = asyncio.create_task(asyncio.to_thread(server.stop))
    await poll(
        lambda: isinstance(server.server, serving.SwitchboardServer) and server.server.stopping
    )
    return owed, stopping


async def test_without_owing_it_until_bridged_a_slowly_redeemed_stream_is_cut_at_the_stop(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = CallCapacity.running

    @contextlib.contextmanager
    def no_longer_owed_on_arrival(capacity: CallCapacity, call_id: str) -> Iterator[None]:
        capacity.bridged(call_id)
        with running(capacity, call_id):
            yield

    monkeypatch.setattr(CallCapacity, "running", no_longer_owed_on_arrival)
    slow_claims(monkeypatch, 0.5)
    server, on_replica = replica(stack, worker_drain_seconds=30)
    try:
        owed, stopping = await answer_then_stop(server, on_replica)
        async with connect(owed.stream_url) as websocket:
            phone = Phone("twilio", websocket)
            await phone.start({"stream_token": owed.stream_token})
            code, _reason = await phone.closed()
        assert code == 1012  # closed by the server's shutdown: the caller is cut off
        await asyncio.wait_for(stopping, 15)
    finally:
        server.stop()


async def stream_and_hang_up(answer: Answer) -> None:
    """The phone provider opens the answered call's stream, then the caller hangs up."""
    async with connect(answer.stream_url) as websocket:
        phone = Phone("twilio", websocket)
        await phone.start({"stream_token": answer.stream_token})
        await phone.hang_up()
        assert await phone.closed() == (1000, "phone_stop")


async def test_without_the_refusal_a_stopping_worker_would_answer_new_calls(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CallCapacity, "begin_stopping", lambda _capacity: None)
    server, on_replica = replica(stack, worker_drain_seconds=30)
    try:
        owed, stopping = await answer_then_stop(server, on_replica)
        taken = await answer_twilio(on_replica)
        assert taken.status == 200 and "<Stream" in taken.text  # a new call, on a worker going away
        for answer in (owed, taken):
            await stream_and_hang_up(answer)
        await asyncio.wait_for(stopping, 15)
    finally:
        server.stop()


async def test_without_waiting_for_it_the_stream_of_an_answered_call_finds_nobody(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving.SwitchboardServer, "on_tick", uvicorn.Server.on_tick)
    server, on_replica = replica(stack, worker_drain_seconds=30)
    try:
        owed = await answer_twilio(on_replica)
        assert owed.status == 200 and owed.stream_token
        stopping = asyncio.create_task(asyncio.to_thread(server.stop))
        await until_it_stops_listening(on_replica.worker)
        await poll(lambda: on_replica.worker_app.state.media_plane.stopped)
        with pytest.raises(OSError):
            async with connect(owed.stream_url):
                pass
        await asyncio.wait_for(stopping, 15)
    finally:
        server.stop()


async def browser_call_on(stack: Stack, on_replica: Stack) -> Browser:
    """A test call from the agent page, minted by the control plane and placed on a replica,
    once its session is ready."""
    stack.xai.reply_audio = list(AGENT_AUDIO)
    minted = await mint(stack, await acme_token(stack))
    assert minted.status_code == 201, minted.text
    url = minted.json()["url"].replace(stack.ws(""), on_replica.ws(""), 1)
    browser = await open_call(url, minted.json()["token"])
    await browser.read_until(lambda b: b.of("ready"))
    return browser


async def browser_call_on_a_stopping_replica(
    stack: Stack, drain_seconds: float
) -> tuple[Browser, tuple[int | None, str | None]]:
    """A test call from the agent page on a replica that is stopped while the call talks: what
    the page was told and how its stream was closed."""
    server, on_replica = replica(stack, worker_drain_seconds=drain_seconds)
    try:
        browser = await browser_call_on(stack, on_replica)
        stopping = asyncio.create_task(asyncio.to_thread(server.stop))
        if drain_seconds > 5:  # the call goes on: the caller talks, the agent answers
            for frame in tone(10) + [SILENCE] * 3:
                await browser.ws.send(frame)
            await browser.read_until(lambda b: len(b.audio) >= len(AGENT_AUDIO))
            assert browser.audio == AGENT_AUDIO
            await browser.ws.send(json.dumps({"type": "stop"}))
        await browser.read_until(lambda b: b.of("ended"), seconds=10)
        closed = await browser.closed()
        await asyncio.wait_for(stopping, 15)
    finally:
        server.stop()
    await wait_for_report(stack)
    return browser, closed


async def test_a_browser_call_goes_on_while_its_worker_drains(stack: Stack) -> None:
    browser, closed = await browser_call_on_a_stopping_replica(stack, drain_seconds=30)
    assert browser.of("ended")[0]["reason"] == "caller_hangup"
    assert closed == (1000, "caller_hangup")


async def test_a_browser_call_cut_by_its_worker_stopping_is_told_why(stack: Stack) -> None:
    browser, closed = await browser_call_on_a_stopping_replica(stack, drain_seconds=0.5)
    assert browser.of("ended")[0]["reason"] == "worker_shutdown"
    assert closed == (1000, "worker_shutdown")
    report = stack.telemetry.reports[-1]
    assert (report.end_reason, report.completed) == ("worker_shutdown", False)


async def test_closed_by_the_listener_alone_a_browser_call_is_cut_at_once_and_told_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls_not_told_of_the_stop(monkeypatch)
    server, on_replica = replica(stack, worker_drain_seconds=30)
    try:
        browser = await browser_call_on(stack, on_replica)
        stopping = asyncio.create_task(asyncio.to_thread(server.stop))
        assert await browser.closed() == (1012, media_plane.RESTARTING)
        assert not browser.of("ended")
        await asyncio.wait_for(stopping, 15)
    finally:
        server.stop()
