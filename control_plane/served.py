"""Answers kept as the bytes we send: the one mechanism behind every hot read.

Session configs, the Unleash client API and the catalogue are built once per change, serialized
once, and then sent as they are, with a strong ETag computed at build time: a matching
`If-None-Match` answers 304 without building anything. `send_served` writes such an answer
straight to ASGI (the fast path, before the framework runs); `served_response` hands it to
FastAPI (the routes, which build on a miss and explain every error).
"""

from dataclasses import dataclass
from functools import cached_property

from fastapi import Request, Response
from starlette.types import Send

from control_plane.http import strong_etag
from control_plane.middleware import API_CSP, SECURITY_HEADERS

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
        text = (
            if_none_match.decode("latin-1") if isinstance(if_none_match, bytes) else if_none_match
        )
        tags = {part.strip().removeprefix("W/") for part in text.split(",")}
        return "*" in tags or self.etag in tags

    @cached_property
    def raw_304(self) -> list[tuple[bytes, bytes]]:
        """The headers of a 304 as ASGI sends them, built once per answer (frozen: the cache
        writes the instance's dict, not its fields)."""
        own = [(name.lower().encode(), value.encode()) for name, value in self.headers().items()]
        return [*own, *SECURITY_HEADERS, (b"content-security-policy", API_CSP)]

    @cached_property
    def raw_200(self) -> list[tuple[bytes, bytes]]:
        return [
            *self.raw_304,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
        ]

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


async def send_served(send: Send, served: Served, if_none_match: bytes | None) -> int:
    """Send the answer (or 304) straight to ASGI, with every header the app's layers would
    have added (the security headers); the status sent."""
    if served.matches(if_none_match):
        await send({"type": "http.response.start", "status": 304, "headers": served.raw_304})
        await send({"type": "http.response.body", "body": b""})
        return 304
    await send({"type": "http.response.start", "status": 200, "headers": served.raw_200})
    await send({"type": "http.response.body", "body": served.body})
    return 200
