"""ASGI middleware: request size limit and security headers, before anything reads the body."""

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.settings import Settings
from switchboard_runtime.worker.bounded_body import BodyProblem, BoundedBody, Refuse

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    # The microphone for the agent page's test call, from this origin only.
    (b"permissions-policy", b"camera=(), microphone=(self), geolocation=()"),
]
HTML_CSP = (
    b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


def html_csp(browser_call_url: str | None) -> bytes:
    """The pages' policy: everything from this origin only, and the call worker's browser
    stream as the one other place a page may connect to (test calls)."""
    if not browser_call_url:
        return HTML_CSP
    parts = urlsplit(browser_call_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return HTML_CSP + f"; connect-src 'self' {scheme}://{parts.netloc}".encode()


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


# A \u0000 escape in a JSON string (an even run of backslashes before it is literal text).
JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)
NUL_IN_QUERY = re.compile(rb"%00|\x00")
NUL_DETAIL = "Text must not contain the NUL character (\\u0000)."
JSON_VALUE = "#/components/schemas/JsonValue"
NO_NUL: dict[str, Any] = {"not": {"pattern": "\\u0000"}}


def nul_in_target(scope: Scope) -> bool:
    """NUL in the path or the query string (raw or %-encoded): no text we store may hold it, and
    PostgreSQL refuses it in a query with an error instead of an answer."""
    query = scope.get("query_string", b"")
    return "\x00" in scope["path"] or NUL_IN_QUERY.search(query) is not None


def document_nul_refusal(document: dict[str, Any]) -> None:
    """Say in the OpenAPI document what this middleware refuses: NUL in any text of a request
    (JSON strings and keys, path, query), so generated clients and fuzzers send what we take."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["JsonValue"] = {
        "description": "Any JSON value whose text, keys included, holds no NUL character.",
        "anyOf": [
            {"type": "null"},
            {"type": "boolean"},
            {"type": "number"},
            {"type": "string", **NO_NUL},
            {"type": "array", "items": {"$ref": JSON_VALUE}},
            {
                "type": "object",
                "propertyNames": NO_NUL,
                "additionalProperties": {"$ref": JSON_VALUE},
            },
        ],
    }
    for name, schema in schemas.items():
        if name != "JsonValue":
            _refuse_nul(schema)
    for path in document.get("paths", {}).values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                _refuse_nul(parameter.get("schema", {}))
            for content in operation.get("requestBody", {}).get("content", {}).values():
                _refuse_nul(content.get("schema", {}))


SCHEMA_WORDS = {"type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const", "not", "properties"}


# Formats whose grammar has no room for NUL: their strings need no extra rule.
NUL_FREE_FORMATS = {"date-time", "date", "time", "uri", "email", "uuid", "ipv4", "ipv6"}


def _nul_free(node: dict[str, Any]) -> bool:
    return node.get("format") in NUL_FREE_FORMATS


def _refuse_nul(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _refuse_nul(item)
        return
    if not isinstance(node, dict):
        return
    if not SCHEMA_WORDS & node.keys():  # any value at all
        node["$ref"] = JSON_VALUE
        return
    kind = node.get("type")
    if kind == "string" and not {"enum", "const"} & node.keys() and not _nul_free(node):
        node.update(NO_NUL)
    if kind == "object" or "properties" in node:
        extra = node.get("additionalProperties", True)
        if extra is not False:
            node.setdefault("propertyNames", {}).update(NO_NUL)
            if extra is True or extra == {}:
                node["additionalProperties"] = {"$ref": JSON_VALUE}
    for key, value in node.items():
        if key in ("properties", "$defs"):
            for child in value.values():
                _refuse_nul(child)
        elif key in ("items", "additionalProperties", "anyOf", "oneOf", "allOf"):
            _refuse_nul(value)


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """True when JSON nests deeper than `limit` (strings are skipped). Cheap when it cannot."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth, in_string, escaped = 0, False, False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


@dataclass(frozen=True)
class RequestLimits:
    max_header_count: int
    max_header_bytes: int

    def headers_too_large(self, scope: Scope) -> bool:
        headers = scope["headers"]
        if len(headers) > self.max_header_count:
            return True
        size = 0
        for name, value in headers:  # a loop: a generator costs more than the few headers
            size += len(name) + len(value)
        return size > self.max_header_bytes

    def refuses(self, scope: Scope) -> bool:
        """Whether `RequestLimitsMiddleware` refuses this request before its body is read."""
        return self.headers_too_large(scope) or nul_in_target(scope)

    @classmethod
    def from_settings(cls, settings: Settings) -> "RequestLimits":
        return cls(settings.max_header_count, settings.max_header_bytes)


class RequestLimitsMiddleware:
    """Refuses oversized headers, NUL and deeply nested JSON, and adds security headers to every
    response. Body size and time are bounded outside it (`BoundedBody`)."""

    def __init__(
        self,
        app: ASGIApp,
        max_json_depth: int,
        max_header_bytes: int,
        max_header_count: int,
        html_csp: bytes = HTML_CSP,
    ) -> None:
        self.app = app
        self.html_csp = html_csp
        self.limits = RequestLimits(max_header_count, max_header_bytes)
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        raw_headers = scope["headers"]
        if self.limits.headers_too_large(scope):
            await self._refuse(
                send,
                431,
                "headers_too_large",
                "Request header fields too large",
                "Too many or too large request headers.",
            )
            return
        if nul_in_target(scope):
            await self._refuse(send, 422, "nul_character", "Invalid input", NUL_DETAIL)
            return
        headers = dict(raw_headers)
        if b"json" in headers.get(b"content-type", b"") and scope["method"] in (
            "POST",
            "PUT",
            "PATCH",
        ):
            # JSON bodies are read whole (BoundedBody, outside this one, bounds their size and
            # time) so nesting can be checked before a parser recurses into it.
            chunks, more = [], True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            body = b"".join(chunks)
            if JSON_NUL.search(body):
                # PostgreSQL cannot store NUL in text; refuse it here, for every field at once.
                await self._refuse(send, 422, "nul_character", "Invalid input", NUL_DETAIL)
                return
            if json_depth_exceeds(body, self.max_json_depth):
                await self._refuse(
                    send,
                    400,
                    "json_too_deep",
                    "Bad request",
                    f"JSON nests deeper than {self.max_json_depth} levels.",
                )
                return
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            receive = replay

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if b"content-security-policy" not in present:
                    is_html = any(
                        name.lower() == b"content-type" and value.startswith(b"text/html")
                        for name, value in headers
                    )
                    csp = self.html_csp if is_html else API_CSP
                    headers.append((b"content-security-policy", csp))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    async def _refuse(send: Send, status: int, code: str, title: str, detail: str) -> None:
        headers, body = _problem(status, code, title, detail)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def body_refusal(max_bytes: int, timeout_seconds: float) -> Refuse:
    """The control plane's answer to a body over its bounds: problem+json with a stable code."""
    answers: dict[BodyProblem, tuple[int, str, str]] = {
        "request_too_large": (
            413,
            "Request body too large",
            f"The request body is larger than {max_bytes} bytes.",
        ),
        "body_timeout": (
            408,
            "Request timeout",
            f"The request body did not arrive within {timeout_seconds:g} s.",
        ),
        "invalid_content_length": (400, "Bad request", "Content-Length is not a number."),
    }

    async def refuse(problem: BodyProblem, send: Send) -> None:
        status, title, detail = answers[problem]
        await RequestLimitsMiddleware._refuse(send, status, problem, title, detail)

    return refuse


def install_middleware(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(
        RequestLimitsMiddleware,
        max_json_depth=settings.max_json_depth,
        max_header_bytes=settings.max_header_bytes,
        max_header_count=settings.max_header_count,
        html_csp=html_csp(settings.browser_call_url),
    )
    # Outside the limits above: a body is bounded before anything reads it.
    app.add_middleware(
        BoundedBody,
        max_bytes=settings.max_request_bytes,
        timeout_seconds=settings.http_body_timeout_seconds,
        refuse=body_refusal(settings.max_request_bytes, settings.http_body_timeout_seconds),
    )


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Let the frontends at SWITCHBOARD_CORS_ORIGINS (exact origins) read the REST API from
    the browser: public catalogue reads, and authenticated calls with a bearer token through
    preflight. Cookies never: a page session does not travel cross-origin. Add it last, so it
    is the outermost layer and answers preflights before anything else runs."""
    origins = settings.cors_origin_list
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_credentials=False,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "If-Match", "If-None-Match"],
        expose_headers=["ETag", "Retry-After", "X-Switchboard-Stale"],
        max_age=600,
    )
