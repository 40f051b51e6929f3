"""HTTP helpers shared by the routers: canonical JSON bytes, strong ETags, conditional requests."""

import hashlib
import json
from typing import Any

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel

from control_plane.errors import PreconditionFailedError


def json_bytes(payload: BaseModel | dict[str, Any] | list[Any]) -> bytes:
    data = (
        payload.model_dump(mode="json")
        if isinstance(payload, BaseModel)
        else jsonable_encoder(payload)
    )
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def strong_etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _etags_in(header: str) -> set[str]:
    return {part.strip().removeprefix("W/") for part in header.split(",") if part.strip()}


def client_holds(if_none_match: str | None, etag: str) -> bool:
    """Whether a request's `If-None-Match` says the client already holds `etag`: `*` alone, or a
    list of tags naming it, weakly compared (RFC 9110, 13.1.2)."""
    if not if_none_match:
        return False
    return if_none_match.strip() == "*" or etag in _etags_in(if_none_match)


def conditional_json(
    request: Request, body: bytes, *, cache_control: str, vary: str | None = None
) -> Response:
    """A JSON response with a strong ETag; 304 when the client already holds this version."""
    etag = strong_etag(body)
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if vary:
        headers["Vary"] = vary
    if client_holds(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(content=body, media_type="application/json", headers=headers)


def check_if_match(request: Request, current_etag: str) -> None:
    """Reject a write made against a version the client no longer has (lost-update guard)."""
    if_match = request.headers.get("if-match")
    if if_match is None or if_match.strip() == "*":
        return
    if current_etag not in _etags_in(if_match):
        raise PreconditionFailedError(
            "The resource changed since you read it: fetch it again and retry with the new ETag.",
            code="stale_version",
            extra={"current_etag": current_etag},
        )
