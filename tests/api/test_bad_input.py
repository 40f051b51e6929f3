"""Bad input gets a clear 4xx problem+json and stores nothing."""

import json
import socket
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from control_plane.app import create_app
from control_plane.settings import Settings
from tests.conftest import Tokens, auth
from tests.fakes.server import BackgroundServer

AGENTS = "/api/v1/workspaces/acme/agents"


def agent_count(client: TestClient, tokens: Tokens) -> int:
    return len(client.get(AGENTS, headers=auth(tokens.acme)).json()["agents"])


def assert_problem(response: httpx.Response, status: int | tuple[int, ...]) -> None:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"]


def test_deep_json_is_refused_before_parsing(client: TestClient, tokens: Tokens) -> None:
    deep = (
        b'{"name": "x", "pricing_tier": "premium", "tools": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    )
    response = client.post(
        AGENTS, content=deep, headers={**auth(tokens.acme), "Content-Type": "application/json"}
    )
    assert_problem(response, 400)
    assert response.json()["code"] == "json_too_deep"
    # Brackets inside strings do not count.
    fine = client.post(
        AGENTS,
        json={"name": "x", "pricing_tier": "premium", "instructions": "[[[[" * 100},
        headers=auth(tokens.acme),
    )
    assert fine.status_code == 201
    assert agent_count(client, tokens) == 1


def test_wrong_content_type_and_broken_bodies(client: TestClient, tokens: Tokens) -> None:
    body = b'{"name": "x", "pricing_tier": "premium"}'
    cases = [
        (body, "text/plain"),
        (b"name=x&pricing_tier=premium", "application/x-www-form-urlencoded"),
        (b'{"name": "\xff\xfe", "pricing_tier": "premium"}', "application/json"),
        (b"", "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'{"name": "x", "pricing_tier": "premium"', "application/json"),
    ]
    for content, content_type in cases:
        response = client.post(
            AGENTS, content=content, headers={**auth(tokens.acme), "Content-Type": content_type}
        )
        assert_problem(response, (400, 415, 422))
    assert agent_count(client, tokens) == 0


def test_header_and_path_abuse_on_a_real_server(
    settings: Settings, tokens: Tokens, client: TestClient
) -> None:
    with (
        BackgroundServer(create_app(settings)) as server,
        httpx.Client(base_url=server.base_url) as http,
    ):
        huge = http.get("/api/v1/tiers", headers={"X-Filler": "a" * 200_000})
        assert 400 <= huge.status_code < 500
        assert_problem(huge, 431)
        many = http.get("/api/v1/tiers", headers={f"X-H{i}": "v" for i in range(500)})
        assert_problem(many, 431)
        assert_problem(
            http.get("/api/v1/tiers", headers={"Authorization": "Bearer " + "x" * 10_000}), 401
        )
        assert_problem(http.get("/api/v1/workspaces/%FF%FE/agents", headers=auth(tokens.acme)), 404)
        assert_problem(
            http.get("/api/v1/voice-maps/grok/resolve", params={"voice": "\u0000" * 70}), 422
        )
        # A raw request with a non-ASCII header value.
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            raw.sendall(
                b"GET /api/v1/tiers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
                b"Connection: close\r\n\r\n"
            )
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0] == b"HTTP/1.1 401 Unauthorized", head
        assert b"content-type: application/problem+json" in head.lower()
        assert json.loads(body)["code"] == "invalid_token"  # a token that cannot exist
    assert agent_count(client, tokens) == 0


@pytest.mark.parametrize("chunked", [False, True])
def test_json_bodies_up_to_the_limit_parse_and_larger_ones_get_413(
    client: TestClient, tokens: Tokens, chunked: bool
) -> None:
    """Every size up to the configured limit reaches the parser (here: a 422 for a name far
    too long); one byte over is 413. Sent whole and in 64 KiB chunks without Content-Length."""
    limit = client.app.state.settings.max_request_bytes  # type: ignore[attr-defined]

    def post(size: int) -> Any:
        body = json.dumps({"name": "x" * (size - 12)}).encode()
        assert len(body) == size
        content: Any = body
        if chunked:
            content = (body[i : i + 65536] for i in range(0, len(body), 65536))
        return client.post(
            "/api/v1/workspaces",
            content=content,
            headers={**auth(tokens.admin), "Content-Type": "application/json"},
        )

    for size in (limit // 2 + 1, limit * 3 // 4, limit):
        response = post(size)
        assert (response.status_code, response.json()["code"]) == (422, "validation_error"), size
    over = post(limit + 1)
    assert (over.status_code, over.json()["code"]) == (413, "request_too_large")


NUL_BODIES = [
    ("POST", "/api/v1/workspaces", '{"id": "nul-ws", "name": "Acme\\u0000Corp"}'),
    ("PATCH", "/api/v1/rollouts/grok-realtime-tier/guard", '{"webhook_url": "http://a\\u0000b/"}'),
]


@pytest.mark.parametrize(("method", "path", "body"), NUL_BODIES)
def test_nul_characters_in_text_are_refused_before_the_database(
    client: TestClient, tokens: Tokens, method: str, path: str, body: str
) -> None:
    response = client.request(
        method,
        path,
        content=body,
        headers={**auth(tokens.admin), "Content-Type": "application/json"},
    )
    assert_problem(response, 422)
    assert response.json()["code"] == "nul_character"
    assert client.get("/api/v1/workspaces/nul-ws", headers=auth(tokens.admin)).status_code == 404


def test_without_the_nul_guard_a_nul_reaches_the_database(
    client: TestClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    from control_plane import middleware

    monkeypatch.setattr(middleware, "JSON_NUL", re.compile(rb"(?!)"))
    method, path, body = NUL_BODIES[0]

    def send() -> Any:
        headers = {**auth(tokens.admin), "Content-Type": "application/json"}
        return client.request(method, path, content=body, headers=headers)

    if client.app.state.settings.is_sqlite:  # type: ignore[attr-defined]
        response = send()
        assert response.status_code == 201 and "\x00" in response.json()["name"]
    else:  # PostgreSQL cannot store it: the request dies inside the database (a 500)
        from sqlalchemy.exc import DataError

        with pytest.raises(DataError):
            send()


NUL_TARGETS = ["/api/v1/audit?actor=a%00b", "/api/v1/workspaces/acme%00x"]


@pytest.mark.parametrize("target", NUL_TARGETS)
def test_nul_in_the_path_or_query_is_refused_before_the_database(
    client: TestClient, tokens: Tokens, target: str
) -> None:
    response = client.get(target, headers=auth(tokens.admin))
    assert_problem(response, 422)
    assert response.json()["code"] == "nul_character"


def test_without_the_target_check_a_nul_in_the_query_reaches_the_database(
    client: TestClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_plane import middleware

    monkeypatch.setattr(middleware, "nul_in_target", lambda scope: False)

    def send() -> Any:
        return client.get(NUL_TARGETS[0], headers=auth(tokens.admin))

    if client.app.state.settings.is_sqlite:  # type: ignore[attr-defined]
        response = send()  # the filter ran in the database, NUL and all
        assert response.status_code == 200 and response.json()["entries"] == []
    else:  # PostgreSQL refuses it: the request dies inside the database (a 500)
        from sqlalchemy.exc import DataError

        with pytest.raises(DataError):
            send()
