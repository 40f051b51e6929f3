"""A fake xAI API on loopback, for tests and benchmarks: the real one is out of reach here.

HTTP: `GET /v1/api-key` (key check) and `POST /v1/realtime/client_secrets` (ephemeral secrets),
with Bearer auth against a set of accepted keys. The realtime WebSocket lives beside it.
"""

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class FakeXAIState:
    accepted_keys: set[str] = field(default_factory=set)
    secrets_minted: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    # Seconds to wait before answering HTTP requests (slow provider).
    http_delay: float = 0.0


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token if scheme.lower() == "bearer" and token else None


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        {"code": "unauthorized", "error": "Incorrect API key provided"}, status_code=401
    )


def build_http_routes(state: FakeXAIState) -> list[Route]:
    async def api_key(request: Request) -> JSONResponse:
        state.requests.append(("GET", "/v1/api-key"))
        if state.http_delay:
            import asyncio

            await asyncio.sleep(state.http_delay)
        key = _bearer(request)
        if key not in state.accepted_keys:
            return _unauthorized()
        return JSONResponse(
            {"redacted_api_key": key[:4] + "****" + key[-4:], "api_key_blocked": False}
        )

    async def client_secrets(request: Request) -> JSONResponse:
        state.requests.append(("POST", "/v1/realtime/client_secrets"))
        key = _bearer(request)
        if key not in state.accepted_keys:
            return _unauthorized()
        body = await request.json()
        seconds = int(body.get("expires_after", {}).get("seconds", 600))
        secret = {
            "value": "xai-eph-" + secrets.token_urlsafe(24),
            "expires_at": int(time.time()) + seconds,
        }
        state.secrets_minted.append(secret)
        return JSONResponse(secret)

    return [
        Route("/v1/api-key", api_key, methods=["GET"]),
        Route("/v1/realtime/client_secrets", client_secrets, methods=["POST"]),
    ]


def build_app(state: FakeXAIState) -> Starlette:
    return Starlette(routes=build_http_routes(state))
