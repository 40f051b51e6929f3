"""Candidate WebSocket layers for the media plane, by CPU per relayed frame (the issue's item 4).

A call's media plane reads a ~300-byte text frame (masked, from the phone or to xAI as a client)
and writes one (unmasked to the phone, masked to xAI), 50 a second each way. Here a server
process on its own core (BENCH_WORKER_CORE, default 0) answers every text frame from its clients
with a text frame of the same size, at CONNECTIONS connections x 50 frames a second for SECONDS;
the clients (bench/phones.py, this process) are on the other core. Reported: the server's CPU
per frame in and out (µs), each layer in its own process, alternating, ROUNDS rounds.

- websockets-sansio: websockets' Sans-I/O ServerProtocol driven from an asyncio protocol (how the
  worker's xAI socket and the benchmark stand-ins work today);
- picows: picows' server (Cython: parsing, masking, framing);
- uvicorn: uvicorn's own Sans-I/O WebSocket protocol under a bare ASGI app reading and writing
  through ASGI messages (the worker's HTTP side; the worker bypasses the queue for media).
- picows-relay: not an echo but a media plane's floor: per phone connection a picows client to
  an xAI stand-in (its own process, on the clients' core) that answers every
  `input_audio_buffer.append` with a `response.output_audio.delta` of the same audio; the relay
  parses each Twilio frame (orjson), sends the append, parses each delta and sends the Twilio
  media frame, all in picows' frame callbacks (no task, no queue per frame). Its CPU per
  call-second (50 frames each way) says what the worker's media path could cost.
- native-relay: the same relay with no Python per frame (bench/native_relay.pyx, Cython through
  picows' C API, built here on first use): no JSON parse, the payload found by scanning for its
  key. What it spends is what any relay on these sockets pays; picows-relay minus it is what a
  frame's Python costs at best.
All on uvloop.
"""

import asyncio
import importlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import picows
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.phones import open_phone  # noqa: E402
from bench.runtime import cpu_seconds, placement  # noqa: E402
from tests.fakes.server import free_port  # noqa: E402

CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "200"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
LAYERS = ("websockets-sansio", "picows", "uvicorn", "picows-relay", "native-relay")
RELAYS = ("picows-relay", "native-relay")  # per phone connection, a connection to the stand-in
FRAME = json.dumps(
    {"event": "media", "streamSid": "MZ" + "0" * 32, "media": {"payload": "A" * 216}}
)


def audio_delta(audio: str) -> dict[str, Any]:
    """A `response.output_audio.delta` as xAI sends it (every field, in its order)."""
    return {
        "type": "response.output_audio.delta",
        "event_id": "event_1",
        "response_id": "resp_1",
        "item_id": "item_1",
        "output_index": 0,
        "content_index": 0,
        "delta": audio,
    }


# Servers (run as `python bench/socket_layers.py serve LAYER PORT`) ------------------------------


def serve_forever(listen: Callable[[], Awaitable[asyncio.Server]]) -> None:
    """Run a server on uvloop until the process is stopped."""

    async def main() -> None:
        server = await listen()
        await server.serve_forever()

    uvloop.run(main())


class PicowsServerSide(picows.WSListener):
    """A picows server connection: text frames go to `on_text`; a close is answered and ends
    the connection (and `on_close` anything tied to it)."""

    def on_text(self, transport: picows.WSTransport, payload: memoryview) -> None:
        raise NotImplementedError

    def on_close(self) -> None:
        pass

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type == picows.WSMsgType.TEXT:
            self.on_text(transport, frame.get_payload_as_memoryview())
        elif frame.msg_type == picows.WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            self.on_close()


def serve_picows(listener: Callable[[], PicowsServerSide], port: int) -> None:
    serve_forever(lambda: picows.ws_create_server(lambda request: listener(), "127.0.0.1", port))


def serve_websockets_sansio(port: int) -> None:
    from websockets.http11 import Request

    from tests.fakes.sansio_server import SansIOServerSocket

    class Echo(SansIOServerSocket):
        def on_request(self, request: Request) -> None:
            self.protocol.send_response(self.protocol.accept(request))
            asyncio.get_running_loop().create_task(self.echo())

        async def echo(self) -> None:
            while (text := await self.next_text()) is not None:
                self.write_text(text)

    serve_forever(lambda: asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port))


class PicowsEcho(PicowsServerSide):
    def on_text(self, transport: picows.WSTransport, payload: memoryview) -> None:
        transport.send(picows.WSMsgType.TEXT, bytes(payload))


class XaiStandin(PicowsServerSide):
    """Answers every append with an audio delta carrying the same audio."""

    def on_text(self, transport: picows.WSTransport, payload: memoryview) -> None:
        event = orjson.loads(payload)
        transport.send(picows.WSMsgType.TEXT, orjson.dumps(audio_delta(event["audio"])))


def serve_picows_relay(port: int, upstream_port: int) -> None:
    text = picows.WSMsgType.TEXT
    upstream_url = f"ws://127.0.0.1:{upstream_port}/v1/realtime"

    class XaiSide(picows.WSListener):
        def __init__(self, phone: "PhoneSide") -> None:
            self.phone = phone

        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            if frame.msg_type != text:
                return
            event = orjson.loads(frame.get_payload_as_memoryview())
            if event.get("type") == "response.output_audio.delta" and self.phone.transport:
                self.phone.transport.send(
                    text,
                    b'{"event":"media","streamSid":"MZ1","media":{"payload":'
                    + orjson.dumps(event["delta"])
                    + b"}}",
                )

    class PhoneSide(PicowsServerSide):
        transport: picows.WSTransport | None = None
        upstream: picows.WSTransport | None = None

        def on_ws_connected(self, transport: picows.WSTransport) -> None:
            self.transport = transport
            asyncio.get_running_loop().create_task(self.connect())

        async def connect(self) -> None:
            self.upstream, _ = await picows.ws_connect(lambda: XaiSide(self), upstream_url)

        def on_text(self, transport: picows.WSTransport, payload: memoryview) -> None:
            event = orjson.loads(payload)
            if event.get("event") == "media" and self.upstream is not None:
                self.upstream.send(
                    text,
                    b'{"type":"input_audio_buffer.append","audio":'
                    + orjson.dumps(event["media"]["payload"])
                    + b"}",
                )

        def on_close(self) -> None:
            if self.upstream is not None:
                self.upstream.disconnect()

    serve_picows(PhoneSide, port)


def native_relay() -> ModuleType:
    """bench/native_relay.pyx, compiled by Cython on first import (into bench/results/)."""
    import pyximport  # type: ignore[import-untyped]

    pyximport.install(build_dir=str(ROOT / "bench" / "results" / "native-build"), language_level=3)
    return importlib.import_module("bench.native_relay")


def serve_native_relay(port: int, upstream_port: int) -> None:
    relay = native_relay()
    upstream_url = f"ws://127.0.0.1:{upstream_port}/v1/realtime"
    serve_forever(
        lambda: picows.ws_create_server(
            lambda request: relay.PhoneSide(upstream_url), "127.0.0.1", port
        )
    )


def serve_uvicorn(port: int) -> None:
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})

    uvicorn.run(
        app,
        port=port,
        log_level="warning",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="off",
    )


# The clients ----------------------------------------------------------------------------------


async def load(port: int, pid: int) -> dict[str, float]:
    answered = [0]
    phones = [
        await open_phone(
            f"ws://127.0.0.1:{port}/", lambda text, at: answered.__setitem__(0, answered[0] + 1)
        )
        for _ in range(CONNECTIONS)
    ]

    await asyncio.sleep(1)  # a relay connects each phone to its xAI stand-in first

    async def talk(index: int) -> int:
        await asyncio.sleep(index * 0.02 / CONNECTIONS)
        sent, due = 0, time.perf_counter()
        until = due + SECONDS
        while due < until:
            phones[index].send(FRAME)
            sent += 1
            due += 0.02
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        return sent

    before, started = cpu_seconds(pid), time.perf_counter()
    sent = sum(await asyncio.gather(*(talk(i) for i in range(CONNECTIONS))))
    await asyncio.sleep(0.2)
    cpu, wall = cpu_seconds(pid) - before, time.perf_counter() - started
    for phone in phones:
        await phone.close()
    return {
        "frames_sent": sent,
        "frames_answered": answered[0],
        "server_cores": cpu / wall,
        "server_us_per_frame_in_and_out": cpu / max(1, answered[0]) * 1e6,
        # 50 frames a second each way per connection, as a call's media.
        "server_ms_per_connection_second": cpu / wall / CONNECTIONS * 1000,
    }


def measure(layer: str, cpus: set[int] | None) -> dict[str, float]:
    port = free_port()
    extra, standin = [], None
    if layer in RELAYS:  # its xAI stand-in shares the clients' CPUs
        upstream_port = free_port()
        standin = subprocess.Popen(
            [sys.executable, __file__, "serve", "xai-standin", str(upstream_port)], cwd=ROOT
        )
        extra = [str(upstream_port)]
    server = subprocess.Popen(
        [sys.executable, __file__, "serve", layer, str(port), *extra],
        cwd=ROOT,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    try:
        wait_for_port(port)
        if extra:  # the relay connects each phone upstream as it arrives
            wait_for_port(int(extra[0]))
        figures = uvloop.run(load(port, server.pid))
    finally:
        for process in (server, standin):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)
    if figures["frames_answered"] != figures["frames_sent"]:  # a broken round is no figure
        raise SystemExit(
            f"{layer}: {figures['frames_answered']:.0f} of {figures['frames_sent']:.0f} frames "
            "answered"
        )
    return figures


def wait_for_port(port: int, seconds: float = 20) -> None:
    """Until something accepts connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on port {port} after {seconds:.0f} s") from None
            time.sleep(0.1)


def main() -> None:
    if len(sys.argv) >= 4 and sys.argv[1] == "serve":
        relays: dict[str, Callable[[int, int], None]] = {
            "picows-relay": serve_picows_relay,
            "native-relay": serve_native_relay,
        }
        if sys.argv[2] in relays:  # a port for the phones, the stand-in's port
            relays[sys.argv[2]](int(sys.argv[3]), int(sys.argv[4]))
            return
        servers: dict[str, Callable[[int], None]] = {
            "websockets-sansio": serve_websockets_sansio,
            "picows": lambda port: serve_picows(PicowsEcho, port),
            "uvicorn": serve_uvicorn,
            "xai-standin": lambda port: serve_picows(XaiStandin, port),
        }
        servers[sys.argv[2]](int(sys.argv[3]))
        return
    native_relay()  # built before anything is measured
    server_cpus, client_cpus = placement()
    os.sched_setaffinity(0, client_cpus)
    results: dict[str, list[dict[str, float]]] = {layer: [] for layer in LAYERS}
    for round_ in range(ROUNDS):
        order = LAYERS if round_ % 2 == 0 else tuple(reversed(LAYERS))
        for layer in order:
            figures = measure(layer, server_cpus)
            results[layer].append(figures)
            print(layer, json.dumps(figures), flush=True)
    summary = {
        layer: statistics.median(r["server_us_per_frame_in_and_out"] for r in runs)
        for layer, runs in results.items()
    }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "socket_layers.json").write_text(
        json.dumps(
            {"connections": CONNECTIONS, "seconds": SECONDS, "runs": results, "median_us": summary},
            indent=2,
        )
    )
    print(
        f"\n{CONNECTIONS} connections x 50 frames/s, server on its own core; "
        "CPU per frame in and out:"
    )
    base = summary["websockets-sansio"]
    for layer, us in summary.items():
        if layer not in RELAYS:
            print(f"  {layer:<18} {us:6.1f} µs  ({base / us:.2f}x websockets-sansio's speed)")
    print(f"Relays at {CONNECTIONS} calls, 50 frames each way: CPU per call-second")
    described = {
        "picows-relay": "Twilio frame -> append, delta -> Twilio frame, orjson, in callbacks",
        "native-relay": "the same in Cython: no Python per frame",
    }
    for layer, what in described.items():
        relay = statistics.median(r["server_ms_per_connection_second"] for r in results[layer])
        print(f"  {layer:<18} {relay:6.2f} ms  ({what})")


if __name__ == "__main__":
    main()
