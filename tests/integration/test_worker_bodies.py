"""The worker's webhook bodies are bounded before they are read: a declared Content-Length over
64 KiB is refused at once, a chunked one as it passes the limit, a slow one at its whole-body
deadline. Each beside its twin with the guard switched off, where the worker reads on."""

import logging
import socket
import time
from typing import Any

import httpx
import pytest

from tests.integration.callstack import Stack, answer_twilio, twilio_params, webhook_url


def twiml_head(stack: Stack, extra: str) -> tuple[int, bytes]:
    url = webhook_url(stack, "twiml", None, "acme")
    path = url.split("://", 1)[1].split("/", 1)[1]
    port = int(stack.worker.rsplit(":", 1)[1])
    head = (
        f"POST /{path} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n{extra}\r\n"
    ).encode()
    return port, head


def push_until_answered(port: int, head: bytes, chunk: bytes, most: int) -> tuple[bytes, int]:
    """Send the head, then `chunk` after chunk until the server answers, closes or `most`
    bytes went: (the answer, the body bytes the server took before it answered)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head)
        sock.settimeout(0.02)
        while sent < most:
            try:
                answer = sock.recv(65536)
                return answer, sent
            except TimeoutError:
                pass
            try:
                sock.sendall(chunk)
            except OSError:
                break
            sent += len(chunk)
        sock.settimeout(10)
        try:
            return sock.recv(65536), sent
        except OSError:
            return b"", sent


def unguarded_worker(stack: Stack) -> Any:
    server, app = stack.worker_replica()
    for middleware in app.user_middleware:
        if middleware.cls.__name__ == "BoundedBody":
            middleware.kwargs["max_bytes"] = 1 << 40
            middleware.kwargs["timeout_seconds"] = 1000.0
    return server


# The attack used 512 MiB; the shape is the same, the test quicker. Three times the 8 MiB the
# refusals below may have taken (socket buffers), so the unguarded twin reads clearly more.
BIG = 24 * 1024 * 1024
FILLER = b"a" * 65536


def test_a_declared_huge_webhook_is_refused_before_its_body_is_read(stack: Stack) -> None:
    port, head = twiml_head(stack, f"Content-Length: {BIG}\r\n")
    answer, taken = push_until_answered(port, head, FILLER, BIG)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:80]
    assert b"request_too_large" in answer
    assert taken < 8 * 1024 * 1024  # what the socket buffers held, not the body


def test_without_the_bound_the_worker_reads_the_whole_huge_body(stack: Stack) -> None:
    with unguarded_worker(stack) as server:
        _, head = twiml_head(stack, f"Content-Length: {BIG}\r\n")
        answer, taken = push_until_answered(server.port, head, FILLER, BIG)
    assert taken == BIG  # every byte was read before anything was answered
    assert answer.startswith(b"HTTP/1.1 ")


def test_a_chunked_webhook_is_refused_as_it_passes_the_limit(stack: Stack) -> None:
    port, head = twiml_head(stack, "Transfer-Encoding: chunked\r\n")
    chunk = b"4000\r\n" + b"a" * 0x4000 + b"\r\n"  # 16 KiB
    answer, taken = push_until_answered(port, head, chunk, BIG)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:80]
    assert taken < 8 * 1024 * 1024


def test_a_slow_webhook_body_gets_408_at_its_deadline(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = stack.worker_replica(worker_body_timeout_seconds=1.0)
    with server:
        _, head = twiml_head(stack, "Content-Length: 5000\r\n")
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head)
            sock.settimeout(0.3)
            answer = b""
            while not answer and time.monotonic() - started < 6:
                try:
                    answer = sock.recv(65536)
                except TimeoutError:
                    sock.sendall(b"a")  # a byte every 0.3 s: never a long silence
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert time.monotonic() - started < 4
    # Refused cleanly: the refusal is not an error of the app (no traceback in the log).
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_without_the_deadline_a_slow_webhook_body_stays_open(stack: Stack) -> None:
    with unguarded_worker(stack) as server:
        _, head = twiml_head(stack, "Content-Length: 5000\r\n")
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head)
            sock.settimeout(0.3)
            for _ in range(8):  # 2.4 s of dripping, no answer
                try:
                    assert sock.recv(65536) == b"", "answered"
                except TimeoutError:
                    sock.sendall(b"a")


async def test_a_webhook_within_the_bounds_still_issues_its_call(stack: Stack) -> None:
    answer = await answer_twilio(stack, params=twilio_params("CA-bounded"))
    assert answer.status == 200 and answer.stream_token
    async with httpx.AsyncClient() as http:
        healthz = await http.get(f"{stack.worker}/healthz")
    assert healthz.headers["cache-control"] == "no-store"
