"""Tokens, scopes and the shape of every error."""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session as SQLSession
from sqlmodel import Session, select

from control_plane.auth import service as auth_service
from control_plane.auth.models import ApiToken
from tests.conftest import Tokens, auth


def test_tokens_are_stored_hashed(client: TestClient, tokens: Tokens) -> None:
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        rows = session.exec(select(ApiToken)).all()
    stored = " ".join(f"{r.token_hash} {r.token_prefix}" for r in rows)
    for token in (tokens.admin, tokens.service, tokens.acme):
        assert token not in stored
        assert auth_service.hash_token(token) in stored


def test_bad_credentials(client: TestClient, tokens: Tokens) -> None:
    for header in ("Bearer sbt_nope", "Bearer", "Basic abc", "Bearer " + "x" * 500):
        response = client.get("/api/v1/workspaces", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] in {"invalid_token", "invalid_authorization_header"}


def test_token_api_and_revocation(client: TestClient, tokens: Tokens) -> None:
    created = client.post(
        "/api/v1/tokens",
        json={"name": "temp", "scopes": ["workspace:acme"]},
        headers=auth(tokens.admin),
    )
    assert created.status_code == 201
    token, token_id = created.json()["token"], created.json()["id"]
    assert client.get("/api/v1/workspaces/acme", headers=auth(token)).status_code == 200
    listed = client.get("/api/v1/tokens", headers=auth(tokens.admin)).json()
    assert token not in str(listed)
    assert any(t["id"] == token_id and t["revoked_at"] is None for t in listed["tokens"])
    assert client.delete(f"/api/v1/tokens/{token_id}", headers=auth(tokens.acme)).status_code == 403
    assert (
        client.delete(f"/api/v1/tokens/{token_id}", headers=auth(tokens.admin)).status_code == 204
    )
    # Revocation reaches the token cache at once, not after it expires.
    assert client.get("/api/v1/workspaces/acme", headers=auth(token)).status_code == 401
    bad_scope = client.post(
        "/api/v1/tokens", json={"name": "x", "scopes": ["root"]}, headers=auth(tokens.admin)
    )
    assert bad_scope.status_code == 422


def test_every_error_is_problem_json(client: TestClient, tokens: Tokens) -> None:
    cases = [
        client.get("/no/such/route"),
        client.delete("/api/v1/tiers"),
        client.post(
            "/api/v1/workspaces",
            content=b"{not json",
            headers={**auth(tokens.admin), "Content-Type": "application/json"},
        ),
        client.post("/api/v1/workspaces", json={"name": ""}, headers=auth(tokens.admin)),
    ]
    for response in cases:
        assert response.status_code >= 400
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert {"type", "title", "status", "detail", "code"} <= body.keys()
        assert body["status"] == response.status_code


def test_validation_errors_do_not_echo_input(client: TestClient, tokens: Tokens) -> None:
    secret = "xai-" + "S" * 40
    response = client.post(
        "/api/v1/workspaces", json={"name": "ok", "id": secret}, headers=auth(tokens.admin)
    )
    assert response.status_code == 422
    assert secret not in response.text


def test_oversized_body_is_refused(client: TestClient, tokens: Tokens) -> None:
    response = client.post(
        "/api/v1/workspaces",
        content=b'{"name": "' + b"a" * 2_000_000 + b'"}',
        headers={**auth(tokens.admin), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"


def test_health_and_security_headers(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.json()["database"] == "ok"
    assert ready.headers["x-content-type-options"] == "nosniff"
    assert ready.headers["x-frame-options"] == "DENY"
    assert "openapi" in client.get("/openapi.json").json()


def test_every_405_names_every_method_of_its_path(client: TestClient) -> None:
    """Checked against the OpenAPI document: Allow lists exactly the methods it declares."""
    document = client.get("/openapi.json").json()
    checked = 0
    for template, operations in document["paths"].items():
        declared = sorted(
            m.upper() for m in operations if m in {"get", "put", "post", "patch", "delete"}
        )
        path = template.replace("{", "").replace("}", "")  # any value fits these parameters
        missing = next(m for m in ("DELETE", "PUT", "PATCH", "POST", "GET") if m not in declared)
        response = client.request(missing, path)
        if response.status_code != 405:
            continue  # another route's template matches this path first (e.g. {id} vs a literal)
        assert response.headers["allow"] == ", ".join(declared), (missing, template)
        assert response.headers["content-type"] == "application/problem+json"
        checked += 1
    assert checked >= 30, checked


def _commit_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The database goes away after the answer is built, just before the request commits."""

    def lost(self: SQLSession) -> None:
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(SQLSession, "commit", lost)


def test_a_read_is_not_lost_to_a_failed_commit(
    client: TestClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    _commit_fails(monkeypatch)
    assert client.get("/api/v1/workspaces/acme", headers=auth(tokens.admin)).status_code == 200
    # A write still fails loudly: nothing is acknowledged that was not stored.
    response = client.post(
        "/api/v1/workspaces", json={"id": "initech", "name": "I"}, headers=auth(tokens.admin)
    )
    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"


def test_a_read_fails_on_a_failed_commit_when_every_request_commits(
    client: TestClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_plane import deps

    monkeypatch.setattr(deps, "has_work_to_commit", lambda session: True)
    _commit_fails(monkeypatch)
    assert client.get("/api/v1/workspaces/acme", headers=auth(tokens.admin)).status_code == 503
