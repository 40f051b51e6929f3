"""Answers kept as the bytes we send: the one mechanism behind every hot read.

Session configs, the Unleash client API and the catalogue are built once per change, serialized
once, and then sent as they are, with a strong ETag computed at build time: a matching
`If-None-Match` answers 304 without building anything. `Served.answer` is such an answer whole
(the fast path: written by the HTTP server as the request arrives, or sent straight to ASGI);
`served_response` hands it to FastAPI (the routes, which build on a miss and explain every
error).
"""

from dataclasses import dataclass
from functools import cached_property

from fastapi import Request, Response
from starlette.types import Send

from control_plane.http import client_holds, strong_etag
from control_plane.middleware import API_CSP, SECURITY_HEADERS
from switchboard_runtime.worker.serving import InstantAnswer

STALE_HEADER = "X-Switchboard-Stale"


@dataclass(frozen=True)
class Served:
    body: bytes
    etag: str
    cache_control: str
    vary: str | None = None

    @classmethod
    def of(cls, body: bytes, cache_control: str, vary: str | None = None) -> "Served":
        return cls(body, strong_etag(body), cache_control, vary)

    def matches(self, if_none_match: str | bytes | None) -> bool:
        if not if_none_match:
            return False
        if if_none_match == self.etag_bytes or if_none_match == self.etag:
            return True  # the usual revalidation: the ETag sent back as it was given
        text = (
            if_none_match.decode("latin-1") if isinstance(if_none_match, bytes) else if_none_match
        )
        return client_holds(text, self.etag)

    def answer(self, if_none_match: bytes | None) -> InstantAnswer:
        """The whole response to a request with this `If-None-Match`, with every header the
        app's layers would have added (the security headers)."""
        return self.not_modified if self.matches(if_none_match) else self.ok

    @cached_property
    def etag_bytes(self) -> bytes:
        return self.etag.encode()

    @cached_property
    def not_modified(self) -> InstantAnswer:
        """Built once per answer (frozen: the cache writes the instance's dict, not its fields)."""
        own = [(name.lower().encode(), value.encode()) for name, value in self.headers().items()]
        headers = (*own, *SECURITY_HEADERS, (b"content-security-policy", API_CSP))
        return InstantAnswer(304, headers, b"")

    @cached_property
    def ok(self) -> InstantAnswer:
        headers = (
            *self.not_modified.headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
        )
        return InstantAnswer(200, headers, self.body)

    def headers(self, *, stale: bool = False) -> dict[str, str]:
        headers = {"ETag": self.etag, "Cache-Control": self.cache_control}
        if self.vary:
            headers["Vary"] = self.vary
        if stale:
            headers[STALE_HEADER] = "true"
        return headers


def served_response(request: Request, served: Served, *, stale: bool = False) -> Response:
    headers = served.headers(stale=stale)
    if not stale and served.matches(request.headers.get("if-none-match")):
        return Response(status_code=304, headers=headers)
    return Response(content=served.body, media_type="application/json", headers=headers)


async def send_answer(send: Send, answer: InstantAnswer) -> None:
    await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
    await send({"type": "http.response.body", "body": answer.body})
