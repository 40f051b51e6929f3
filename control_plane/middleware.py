"""ASGI middleware: request size limit and security headers, before anything reads the body."""

import json

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.settings import Settings

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
HTML_CSP = (
    b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
API_CSP = b"default-src 'none'; frame-ancestors 'none'"


def _problem(
    status: int, code: str, title: str, detail: str
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(
        {
            "type": f"https://switchboard.dev/problems/{code}",
            "title": title,
            "status": status,
            "detail": detail,
            "code": code,
        }
    ).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
    ]
    return headers, body


class BodyTooLarge(Exception):
    pass


class RequestLimitsMiddleware:
    """Refuses oversized bodies (413) and adds security headers to every response."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await self._refuse(
                    send,
                    400,
                    "invalid_content_length",
                    "Bad request",
                    "Content-Length is not a number.",
                )
                return
            if int(declared) > self.max_body_bytes:
                await self._refuse_too_large(send)
                return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if b"content-security-policy" not in present:
                    is_html = any(
                        name.lower() == b"content-type" and value.startswith(b"text/html")
                        for name, value in headers
                    )
                    headers.append((b"content-security-policy", HTML_CSP if is_html else API_CSP))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except BodyTooLarge:
            if not response_started:
                await self._refuse_too_large(send)

    async def _refuse_too_large(self, send: Send) -> None:
        await self._refuse(
            send,
            413,
            "request_too_large",
            "Request body too large",
            f"The request body is larger than {self.max_body_bytes} bytes.",
        )

    @staticmethod
    async def _refuse(send: Send, status: int, code: str, title: str, detail: str) -> None:
        headers, body = _problem(status, code, title, detail)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def install_middleware(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(RequestLimitsMiddleware, max_body_bytes=settings.max_request_bytes)
