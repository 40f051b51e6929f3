"""A TCP proxy on loopback that plays a network: every byte is delayed by `delay` seconds each
way, in order, and a new connection first waits `handshake_rtts` round trips (TCP and TLS
handshakes, which loopback does not have). Used by the warm-start benchmark in front of the fake
xAI and of the control plane. The delay can change between measurements."""

import asyncio
import contextlib


class DelayProxy:
    def __init__(self, upstream_port: int, delay: float = 0.0, handshake_rtts: int = 2) -> None:
        self.upstream_port, self.delay, self.handshake_rtts = upstream_port, delay, handshake_rtts
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(self.handshake_rtts * 2 * self.delay)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port
            )
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer),
            return_exceptions=True,
        )

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copy one direction, each chunk `delay` after it was read (a delay line: chunks in
        flight overlap, so the delay adds latency, not a throughput limit)."""
        loop = asyncio.get_running_loop()
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await line.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    break
                sink.write(chunk)
                await sink.drain()
            with contextlib.suppress(OSError):
                sink.close()

        delivering = asyncio.create_task(deliver())
        try:
            while chunk := await source.read(65536):
                line.put_nowait((loop.time() + self.delay, chunk))
        except OSError:
            pass
        line.put_nowait((loop.time() + self.delay, b""))
        await delivering
