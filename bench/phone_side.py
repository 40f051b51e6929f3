"""What serving the phone side of a call costs under ASGI, against a bare Sans-I/O server
(`make bench-phone-side`).

The worker's media streams go through uvicorn's ASGI WebSocket and Starlette's WebSocket. To
know what each layer costs before building around it, this runs the phone side alone, side by
side: PHONES (default 200) lean Twilio phones send a media frame every 20 ms to a server that
reads each frame as the worker does (`read_phone_event`, Twilio dialect) and answers one media
frame (`Twilio.media`), under (KINDS, default all four)
  asgi       FastAPI + uvicorn, the stream routed by FastAPI (the worker until 2026-12-03);
  starlette  uvicorn, the stream served by an ASGI middleware ahead of the router, through
             Starlette's WebSocket (the worker's `MediaStreams`, until the take-over);
  mediaplane the worker's media plane (`media_plane.MediaPlane`, picows; the worker since
             2026-12-06; from 2026-12-03 it took the stream over from uvicorn's protocol);
  raw        uvicorn, the stream served by a bare ASGI app (no Starlette);
  lean       websockets' Sans-I/O ServerProtocol driven from an asyncio protocol (no ASGI).
All on uvloop. The server runs in its own process on CPU 0, the phones here on CPU 1; the figure
is the server's CPU per frame read and answered. ROUNDS (default 2) rounds each, alternating.
Then, in this process, what permessage-deflate would add to each frame (the worker declines it).
"""

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.phone_calls import stamped  # noqa: E402
from bench.phones import open_phone  # noqa: E402
from bench.runtime import cpu_seconds  # noqa: E402
from switchboard_runtime.telephony import (  # noqa: E402
    DIALECTS,
    BridgeStats,
    Media,
    PhoneSocket,
    read_phone_event,
)
from tests.fakes.server import free_port  # noqa: E402

PHONES = int(os.environ.get("PHONES", "200"))
SECONDS = 6.0
ROUNDS = int(os.environ.get("ROUNDS", "2"))
TWILIO = DIALECTS["twilio"]


async def answer_each_frame(phone: PhoneSocket) -> None:
    """The worker's per-frame work on the phone side, without the xAI side."""
    stats = BridgeStats()
    while (event := await read_phone_event(phone, TWILIO, stats)) is not None:
        if isinstance(event, Media):
            await phone.send_text(TWILIO.media("MZ1", event.payload))


def serve_asgi(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI, WebSocket

    from switchboard_runtime.worker.streams import StarletteSocket

    app = FastAPI()

    @app.websocket("/ws/twilio/bench")
    async def twilio(websocket: WebSocket) -> None:
        await websocket.accept()
        await answer_each_frame(StarletteSocket(websocket))

    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", log_level="warning")


def serve_starlette(port: int) -> None:
    import uvicorn
    from starlette.types import Receive, Scope, Send
    from starlette.websockets import WebSocket

    from switchboard_runtime.worker.streams import StarletteSocket

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await answer_each_frame(await StarletteSocket.accept(WebSocket(scope, receive, send)))
        elif scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})

    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", log_level="warning")


def serve_media_plane(port: int) -> None:
    import uvloop

    from switchboard_runtime.worker.media_plane import FrameLimits, MediaPlane

    async def phone(socket: Any, *_route: Any) -> None:
        await answer_each_frame(socket)

    async def not_served(*_args: Any) -> None:
        pass

    async def main() -> None:
        plane = MediaPlane(
            host="127.0.0.1",
            port=port,
            limits=FrameLimits(16 * 1024, 16 * 1024),
            handshake_timeout_seconds=10,
            trusted_proxies=(),
            phone=phone,
            browser=not_served,
        )
        await plane.start()
        await asyncio.Event().wait()

    uvloop.run(main())


def serve_raw(port: int) -> None:
    import uvicorn
    from starlette.types import Receive, Scope, Send

    class RawPhone:
        def __init__(self, receive: Receive, send: Send) -> None:
            self._receive, self._send = receive, send

        async def receive(self) -> str | bytes | None:
            message = await self._receive()
            if message["type"] != "websocket.receive":
                return None
            text: str | None = message.get("text")
            return text if text is not None else bytes(message.get("bytes") or b"")

        async def send_text(self, text: str) -> None:
            await self._send({"type": "websocket.send", "text": text})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            await answer_each_frame(RawPhone(receive, send))
        elif scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})

    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", log_level="warning")


def serve_lean(port: int) -> None:
    import uvloop
    from websockets.http11 import Request

    from switchboard_runtime.telephony import PhoneGone
    from tests.fakes.sansio_server import SansIOServerSocket

    class LeanPhoneSocket(SansIOServerSocket):
        def on_request(self, request: Request) -> None:
            self.protocol.send_response(self.protocol.accept(request))
            asyncio.get_running_loop().create_task(answer_each_frame(self))

        async def receive(self) -> str | None:
            return await self.next_text()

        async def send_text(self, text: str) -> None:
            if not self.write_text(text):
                raise PhoneGone

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(LeanPhoneSocket, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


async def phones_against(port: int) -> tuple[int, float]:
    """(frames answered, seconds) with PHONES phones talking for SECONDS."""
    answered = [0]

    def heard(_text: str, _arrived_at: float) -> None:
        answered[0] += 1

    url = f"ws://127.0.0.1:{port}/ws/twilio/bench"
    phones = [await open_phone(url, heard) for _ in range(PHONES)]
    prefix = json.dumps({"event": "media", "streamSid": "MZ1", "media": {"track": "inbound"}})

    async def talk(index: int) -> None:
        await asyncio.sleep(index * 0.02 / PHONES)
        due = time.perf_counter()
        until = due + SECONDS
        while due < until:
            phones[index].send(prefix[:-2] + ', "payload": "' + stamped(True) + '"}}')
            due += 0.02
            await asyncio.sleep(max(0.0, due - time.perf_counter()))

    started = time.perf_counter()
    await asyncio.gather(*(talk(i) for i in range(len(phones))))
    await asyncio.sleep(0.2)  # the last answers
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(phone.close() for phone in phones))
    return answered[0], elapsed


def one_round(kind: str) -> dict[str, Any]:
    import uvloop

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "serve", kind, str(port)],
        cwd=ROOT,
        preexec_fn=lambda: os.sched_setaffinity(0, {0}),
    )
    try:
        time.sleep(2.0)  # imports and listen
        before = cpu_seconds(server.pid)
        frames, elapsed = uvloop.run(phones_against(port))
        used = cpu_seconds(server.pid) - before
    finally:
        server.terminate()
        server.wait(timeout=10)
    return {"frames": frames, "cores": used / elapsed, "us_per_frame": used / max(1, frames) * 1e6}


def compression_us_per_frame(frames: int = 20_000) -> float:
    """What permessage-deflate would add per frame read and answered, with the settings uvicorn
    offers (window 12 bits, memLevel 5): one inflate and one deflate of a Twilio media frame
    carrying 160 random bytes (audio compresses little), context kept as on a live stream."""
    import base64

    from websockets.extensions.permessage_deflate import PerMessageDeflate
    from websockets.frames import Frame, Opcode

    texts = [
        TWILIO.media("MZ1", base64.b64encode(os.urandom(160)).decode()).encode()
        for _ in range(frames)
    ]
    ours = PerMessageDeflate(False, False, 12, 12, {"memLevel": 5})
    theirs = PerMessageDeflate(False, False, 12, 12, {"memLevel": 5})
    started = time.process_time()
    for text in texts:
        theirs.decode(ours.encode(Frame(Opcode.TEXT, text)))
    return (time.process_time() - started) / frames * 1e6


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        servers = {
            "asgi": serve_asgi,
            "starlette": serve_starlette,
            "mediaplane": serve_media_plane,
            "raw": serve_raw,
            "lean": serve_lean,
        }
        servers[sys.argv[2]](int(sys.argv[3]))
        return
    os.sched_setaffinity(0, {1})
    kinds = os.environ.get("KINDS", "asgi,starlette,mediaplane,raw,lean").split(",")
    rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for _ in range(ROUNDS):
        for kind in rounds:
            rounds[kind].append(one_round(kind))
            print(kind, rounds[kind][-1], flush=True)
    medians = {
        kind: statistics.median(r["us_per_frame"] for r in runs) for kind, runs in rounds.items()
    }
    expected = PHONES * SECONDS / 0.02
    print(
        f"\n{PHONES} phones, one media frame every 20 ms each for {SECONDS:.0f} s "
        f"(~{expected:,.0f} frames), server CPU per frame read and answered "
        f"(median of {ROUNDS}):"
    )
    slowest = max(medians.values())
    for kind, us in medians.items():
        print(f"  {kind:<10} {us:5.1f} us   slowest / this: {slowest / us:.2f}")
    print(
        f"permessage-deflate, were it negotiated (the worker declines it): "
        f"+{compression_us_per_frame():.1f} us per frame read and answered"
    )


if __name__ == "__main__":
    main()
