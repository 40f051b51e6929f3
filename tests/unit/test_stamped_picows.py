"""picows on the benchmarks' stamped transport: frames arrive whole and in order through picows'
own buffer, a late reader still learns when a frame reached its socket, and a refusal is picows'."""

import asyncio
import time
from http import HTTPStatus

import pytest
from picows import (
    WSFrame,
    WSHandshakeError,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)

from tests.fakes import stamped_picows
from tests.fakes.arrival_stamps import StampedServer, arrival_time


class Keeper(WSListener):
    """Keeps each text frame with (arrival, read) times; answers a close and hangs up."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, float, float]] = []
        self.heard = asyncio.Event()
        self.gone = asyncio.Event()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            arrived = arrival_time(transport.underlying_transport)
            self.texts.append((frame.get_payload_as_utf8_text(), arrived, time.time()))
            self.heard.set()
        elif frame.msg_type is WSMsgType.CLOSE:
            stamped_picows.answer_close(transport, frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.gone.set()


async def server_keeping(keeper: Keeper) -> StampedServer:
    def answer(request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener:
        if request.path != b"/stream":
            refusal = WSUpgradeResponse.create_error_response(HTTPStatus.FORBIDDEN, b"no\n")
            return WSUpgradeResponseWithListener(refusal, None)
        return keeper

    return await stamped_picows.serve(answer, "127.0.0.1", 0)


async def test_a_late_reader_learns_when_a_frame_reached_its_socket() -> None:
    keeper = Keeper()
    server = await server_keeping(keeper)
    client, _ = await stamped_picows.connect(f"ws://127.0.0.1:{server.port}/stream", WSListener)
    await asyncio.sleep(0.05)  # the server has its side
    sent = time.time()
    client.send(WSMsgType.TEXT, b"frame")
    time.sleep(0.2)  # noqa: ASYNC251 - blocking on purpose: the frame waits in the socket
    await asyncio.wait_for(keeper.heard.wait(), 5)
    client.disconnect()
    server.close()

    [(text, arrived, read)] = keeper.texts
    assert text == "frame"
    assert read - sent >= 0.2
    assert sent <= arrived < sent + 0.1  # the kernel's stamp, not the read


async def test_frames_larger_than_the_read_buffer_arrive_whole_and_in_order() -> None:
    keeper = Keeper()
    server = await server_keeping(keeper)
    client, _ = await stamped_picows.connect(f"ws://127.0.0.1:{server.port}/stream", WSListener)
    texts = [str(i) * (stamped_picows.READ_BUFFER_SIZE * 8 + i) for i in range(1, 4)]
    texts += [f"small {i}" for i in range(100)]
    for text in texts:
        client.send(WSMsgType.TEXT, text.encode())
    client.send_close()
    await asyncio.wait_for(keeper.gone.wait(), 10)
    server.close()

    assert [text for text, _, _ in keeper.texts] == texts


async def test_the_servers_refusal_reaches_the_client_as_picows_says_it() -> None:
    server = await server_keeping(Keeper())
    with pytest.raises(WSHandshakeError) as refused:
        await stamped_picows.connect(f"ws://127.0.0.1:{server.port}/elsewhere", WSListener)
    server.close()

    assert refused.value.response is not None
    assert refused.value.response.status == HTTPStatus.FORBIDDEN
