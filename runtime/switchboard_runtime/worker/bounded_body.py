"""Request bodies bounded in size and time before anything buffers them (ASGI middleware).

Both Switchboard servers put this outermost, ahead of every route:
- a `Content-Length` over the limit is refused before a byte of the body is read;
- a body without one (chunked, or a lying client) is counted as it arrives and refused as soon
  as it passes the limit, so nothing larger than the limit plus one read is ever held;
- the whole body has one deadline, counted from the end of the headers: a client sending one
  byte every few seconds is refused when it runs out, not kept alive by each byte.

What the refusal looks like is the server's business (`Refuse`): the control plane answers with
problem+json, the call worker as a phone provider expects. A refusal after the app has started
its response cannot be sent; the connection is then simply closed by the server.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BodyProblem = Literal["request_too_large", "body_timeout", "invalid_content_length"]
# Sends the whole refusal response for a problem on `send`.
Refuse = Callable[[BodyProblem, Send], Awaitable[None]]


class BodyRefused(Exception):
    """Raised out of `receive` when the body breaks a bound; the middleware answers it."""

    def __init__(self, problem: BodyProblem) -> None:
        super().__init__(problem)
        self.problem = problem


class BoundedBody:
    def __init__(
        self, app: ASGIApp, *, max_bytes: int, timeout_seconds: float, refuse: Refuse
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared == -1:
            await self.refuse("invalid_content_length", send)
            return
        if declared is not None and declared > self.max_bytes:
            await self.refuse("request_too_large", send)
            return

        deadline = asyncio.get_running_loop().time() + self.timeout_seconds
        received = 0
        body_done = declared == 0
        response_started = refused = False

        async def refuse(problem: BodyProblem) -> BodyRefused:
            # Answered here and now: a parser that catches the exception (FastAPI's form
            # parsing answers 400 for any) must not decide what the client hears.
            nonlocal refused
            if not response_started and not refused:
                refused = True
                await self.refuse(problem, send)
            return BodyRefused(problem)

        async def bounded_receive() -> Message:
            nonlocal received, body_done
            if body_done or refused:  # only the disconnect is left: no deadline on that
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise await refuse("body_timeout") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise await refuse("request_too_large")
                body_done = not message.get("more_body", False)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal response_started
            if refused:  # the app's own answer to a body we already refused
                return
            response_started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracked_send)
        except BaseException as failure:
            if not (refused and only_refusals(failure)):
                raise


def only_refusals(failure: BaseException) -> bool:
    """The refusal itself, or a group of nothing else (middleware that reads the body in a
    task group, as Starlette's BaseHTTPMiddleware does, raises it wrapped)."""
    if isinstance(failure, BaseExceptionGroup):
        return failure.split(BodyRefused)[1] is None
    return isinstance(failure, BodyRefused)


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length: None when absent, -1 when it is not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() and len(value) < 19 else -1
    return None
