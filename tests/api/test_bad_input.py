"""Bad input gets a clear 4xx problem+json and stores nothing."""

import socket

import httpx
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
                b"GET /api/v1/tiers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n"
            )
            status_line = raw.recv(100).split(b"\r\n")[0]
        assert status_line.split()[1].startswith(b"4"), status_line
    assert agent_count(client, tokens) == 0
