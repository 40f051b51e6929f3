"""A socket that has not shown a stream token holds no call place: anonymous browser sockets and
media streams before `start` wait in a small pre-start bound of their own (per worker, per
client address, a short deadline), so signed calls are never answered busy because of them.
Each guard beside its twin, where the attack succeeds."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from switchboard_runtime.worker.capacity import CallCapacity, PreStartSockets
from tests.integration.callstack import (
    CALLER_FRAMES,
    Stack,
    answer_twilio,
    twilio_params,
)
from tests.integration.test_call_entry import stream

BUSY = '<Reject reason="busy"/>'


class PlacesBeforeTokens(PreStartSockets):
    """The guard switched off: a socket takes a call place before it has shown a token, as
    browser calls used to."""

    def __init__(self, capacity: CallCapacity) -> None:
        super().__init__(limit=100_000, per_address=100_000)
        self.capacity = capacity

    @contextmanager
    def waiting(self, address: str, evict: Any) -> Iterator[bool]:
        with self.capacity.taken() as admitted:
            yield admitted


async def anonymous(stack: Stack, path: str, count: int) -> list[ClientConnection]:
    sockets = [await connect(stack.ws(path)) for _ in range(count)]
    await asyncio.sleep(0.1)  # accepted and waiting, showing nothing
    return sockets


async def close_code(socket: ClientConnection, seconds: float = 2.0) -> int | None:
    try:
        async with asyncio.timeout(seconds):
            while True:
                await socket.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    except TimeoutError:
        return None


async def signed_calls_answered(stack: Stack, count: int) -> list[bool]:
    """Place `count` signed calls one after another, each hung up at once: which got a stream."""
    answered = []
    for index in range(count):
        answer = await answer_twilio(stack, params=twilio_params(f"CA-real-{index}"))
        answered.append(BUSY not in answer.text and answer.stream_token is not None)
        if answer.stream_token:
            phone = await stream(
                stack, f"/ws/twilio/{stack.agent_id}", {"stream_token": answer.stream_token}
            )
            await phone.speak(CALLER_FRAMES[:1])
            await phone.hang_up()
            await phone.ws.close()
    return answered


async def readyz(stack: Stack) -> int:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{stack.worker}/readyz")).status_code


def limit(stack: Stack, max_calls: int) -> CallCapacity:
    capacity = CallCapacity(max_calls, hold_seconds=0.5)
    stack.worker_app.state.capacity = capacity
    return capacity


async def test_anonymous_browser_sockets_hold_no_call_place(stack: Stack) -> None:
    limit(stack, 4)
    held = await anonymous(stack, f"/ws/realtime/{stack.agent_id}", 4)
    try:
        assert await readyz(stack) == 200
        assert await signed_calls_answered(stack, 3) == [True, True, True]
    finally:
        for socket in held:
            await socket.close()


async def test_with_places_before_tokens_anonymous_sockets_make_every_call_busy(
    stack: Stack,
) -> None:
    capacity = limit(stack, 4)
    stack.worker_app.state.pre_start = PlacesBeforeTokens(capacity)
    held = await anonymous(stack, f"/ws/realtime/{stack.agent_id}", 4)
    try:
        assert await readyz(stack) == 503
        assert await signed_calls_answered(stack, 3) == [False, False, False]
    finally:
        for socket in held:
            await socket.close()


async def test_one_address_has_few_sockets_before_a_token(stack: Stack) -> None:
    stack.worker_app.state.stream_start_timeout_seconds = 30
    stack.worker_app.state.pre_start = PreStartSockets(limit=100, per_address=3)
    held = await anonymous(stack, "/ws/twilio/agent_x", 3)
    extra = await connect(stack.ws("/ws/twilio/agent_x"))
    assert await close_code(extra) == 4401  # refused at once, not after the start deadline
    assert [await close_code(s, 0.2) for s in held] == [None, None, None]  # still waiting
    for socket in held:
        await socket.close()


async def test_without_the_per_address_bound_one_address_opens_as_many_as_it_likes(
    stack: Stack,
) -> None:
    stack.worker_app.state.stream_start_timeout_seconds = 30
    stack.worker_app.state.pre_start = PreStartSockets(limit=100_000, per_address=100_000)
    held = await anonymous(stack, "/ws/twilio/agent_x", 20)
    assert [await close_code(s, 0.05) for s in held] == [None] * 20
    for socket in held:
        await socket.close()


async def test_a_real_stream_makes_room_by_closing_the_oldest_anonymous_one(
    stack: Stack,
) -> None:
    stack.worker_app.state.pre_start = PreStartSockets(limit=3, per_address=100)
    held = await anonymous(stack, "/ws/twilio/agent_x", 3)
    answer = await answer_twilio(stack, params=twilio_params("CA-real"))
    phone = await stream(
        stack, f"/ws/twilio/{stack.agent_id}", {"stream_token": answer.stream_token or ""}
    )
    await phone.speak(CALLER_FRAMES)
    await phone.collect(lambda p: len(p.media()) >= len(stack.xai.reply_audio))
    assert len(phone.media()) >= len(stack.xai.reply_audio)  # the real call runs
    assert await close_code(held[0]) == 4401  # the oldest anonymous socket made room
    await phone.hang_up()
    await phone.ws.close()
    for socket in held:
        await socket.close()


async def test_an_anonymous_socket_is_closed_at_the_start_deadline(stack: Stack) -> None:
    (socket,) = await anonymous(stack, f"/ws/realtime/{stack.agent_id}", 1)
    # The stack's start deadline is 1 s (the default is 5 s).
    assert await close_code(socket, 3) == 4401
