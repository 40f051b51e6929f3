"""WebSocket messages are bounded per kind of socket on the media plane: past 64 KiB picows
refuses a frame from its header, before its payload is read; below that, each kind of socket
its own limit. A 1 MiB frame on an anonymous media stream closes it with 1009. The twin, with
the limits switched off, takes the frame whole. Refusing a frame writes no ERROR line (picows'
own line for it is held to one WARNING a minute): its twin shows one ERROR line per socket."""

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from switchboard_runtime.worker import media_plane
from tests.integration.callstack import (
    CALLER_FRAMES,
    Stack,
    build_stack,
    phone_call,
    poll,
    wait_for_report,
)
from tests.integration.test_worker_capacity import metric

MEGABYTE = "x" * (1024 * 1024)


async def close_code_after(url: str, frame: str | bytes | list[str]) -> int | None:
    """Send one message (a list: in fragments) on a fresh socket: the close code the worker
    answers with, or None when the socket is still open a moment later (it was taken)."""
    async with connect(url, max_size=None, open_timeout=5) as socket:
        await socket.send(frame)
        try:
            async with asyncio.timeout(0.5):
                await socket.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        except TimeoutError:
            return None
        return None


class RootLines(logging.Handler):
    """What a handler on the root logger gets, as the worker's own logging set-up has it
    (pytest's capture also hooks every non-propagating logger, so it sees more than that)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()[:80]}")


async def log_lines_of_refused_frames(stack: Stack) -> list[str]:
    """Five anonymous sockets, each closed for a frame over picows' limit: the lines logged."""
    root, seen = logging.getLogger(), RootLines()
    root.addHandler(seen)
    try:
        for _ in range(5):
            assert await close_code_after(stack.ws("/ws/twilio/agent_x"), MEGABYTE) == 1009
        await asyncio.sleep(0.1)  # picows disconnects a moment after its close frame
    finally:
        root.removeHandler(seen)
    return seen.lines


async def test_refused_frames_write_no_error_lines(stack: Stack) -> None:
    lines = await log_lines_of_refused_frames(stack)
    assert not [line for line in lines if line.startswith(("ERROR", "CRITICAL"))], lines
    assert len(lines) <= 1, lines  # the first refusal this minute is said once, as a warning


async def test_twin_without_the_peer_fault_handler_each_refused_frame_is_an_error_line(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(media_plane.connections, "handlers", [])
    monkeypatch.setattr(media_plane.connections, "propagate", True)
    lines = await log_lines_of_refused_frames(stack)
    assert len([line for line in lines if line.startswith("ERROR")]) == 5, lines


@pytest.mark.parametrize("path", ["/ws/twilio/agent_x", "/ws/telnyx/agent_x"])
async def test_a_huge_frame_before_start_closes_a_media_stream(stack: Stack, path: str) -> None:
    assert await close_code_after(stack.ws(path), MEGABYTE) == 1009


async def test_a_frame_just_over_the_media_stream_limit_is_refused(stack: Stack) -> None:
    limit = stack.worker_settings.media_stream_max_frame_bytes
    assert await close_code_after(stack.ws("/ws/twilio/agent_x"), "x" * (limit + 1)) == 1009
    # At the limit it is read (and ignored as no start): the socket waits for a start.
    assert await close_code_after(stack.ws("/ws/twilio/agent_x"), "x" * limit) is None


async def test_a_browser_call_takes_a_second_of_audio_but_not_more(stack: Stack) -> None:
    url = stack.ws(f"/ws/realtime/{stack.agent_id}")
    assert await close_code_after(url, b"\0" * 48_000) is None
    assert await close_code_after(url, b"\0" * (1024 * 1024)) == 1009


@pytest.fixture
def unlimited_stack(tmp_path: Path, monkeypatch: Any) -> Iterator[Stack]:
    """The stack with the media plane's limits switched off (16 MiB, as uvicorn's default)."""
    monkeypatch.setattr(media_plane, "MAX_FRAME_BYTES", 16 << 20)  # read as the listener starts
    for stack in build_stack(tmp_path):
        stack.worker_app.state.media_plane.limits = media_plane.FrameLimits(16 << 20, 16 << 20)
        yield stack


async def test_without_the_limits_an_anonymous_socket_sends_a_megabyte(
    unlimited_stack: Stack,
) -> None:
    url = unlimited_stack.ws("/ws/twilio/agent_x")
    assert await close_code_after(url, MEGABYTE) is None


async def test_calls_run_as_before_under_the_limits(stack: Stack) -> None:
    async for phone in phone_call(stack, "twilio"):
        await phone.speak(CALLER_FRAMES)
        await phone.collect(lambda p: len(p.media()) >= len(stack.xai.reply_audio))
        assert len(phone.media()) >= len(stack.xai.reply_audio)
    await wait_for_report(stack)


async def test_the_worker_counts_what_its_media_plane_refuses(stack: Stack) -> None:
    refused = 'switchboard_worker_media_sockets_refused_total{reason="%s"}'
    open_sockets = "switchboard_worker_media_sockets"
    assert metric(stack, refused % "message_too_big") == 0
    assert metric(stack, refused % "unknown_path") == 0
    assert await close_code_after(stack.ws("/ws/twilio/agent_x"), MEGABYTE) == 1009
    with pytest.raises(InvalidStatus):
        await connect(stack.ws("/ws/sip/agent_x"))
    async with connect(stack.ws("/ws/twilio/agent_x")):  # open, waiting for its token
        await poll(lambda: metric(stack, open_sockets) == 1)
    await poll(lambda: metric(stack, open_sockets) == 0)
    assert metric(stack, refused % "message_too_big") == 1
    assert metric(stack, refused % "unknown_path") == 1
    assert metric(stack, refused % "invalid_text") == 0
