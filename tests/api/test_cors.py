"""CORS for frontends on another origin (SWITCHBOARD_CORS_ORIGINS, exact origins): the public
catalogue is readable from a listed origin, authenticated REST works through preflight with a
bearer token, credentials never travel cross-origin, and an unlisted origin gets nothing."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlmodel import Session

from control_plane.app import create_app
from control_plane.auth import service as auth_service
from control_plane.settings import Settings

FRONTEND = "http://127.0.0.1:5173"
ELSEWHERE = "http://127.0.0.1:6666"


def app_settings(tmp_path: Path, sqlite_template: Path, **extra: str) -> Settings:
    database = tmp_path / "cors.db"
    shutil.copyfile(sqlite_template, database)
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        environment="test",
        database_url=f"sqlite:///{database}",
        master_key_file=tmp_path / "master.key",
        **extra,
    )


@pytest.fixture
def cors(tmp_path: Path, sqlite_template: Path) -> Iterator[tuple[TestClient, str]]:
    app = create_app(app_settings(tmp_path, sqlite_template, cors_origins=FRONTEND))
    with TestClient(app) as client:
        with Session(app.state.engine) as session:
            _, token = auth_service.create_token(session, name="fe", scopes=["admin"])
            session.commit()
        yield client, token


def test_a_listed_origin_reads_the_catalogue(cors: tuple[TestClient, str]) -> None:
    client, _ = cors
    answer = client.get("/api/v1/tiers", headers={"Origin": FRONTEND})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == FRONTEND
    assert "etag" in answer.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-credentials" not in answer.headers
    again = client.get(
        "/api/v1/tiers", headers={"Origin": FRONTEND, "If-None-Match": answer.headers["etag"]}
    )
    assert again.status_code == 304  # the fast path's answers carry it too
    assert again.headers["access-control-allow-origin"] == FRONTEND


def test_without_the_origin_check_in_the_hot_lane_a_frontend_loses_its_permission(
    cors: tuple[TestClient, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot reads' lane answers before CORS runs, so it leaves reads with an Origin to it;
    switched off, the kept catalogue goes out without the header the browser needs."""
    client, _ = cors
    assert client.get("/api/v1/tiers").status_code == 200  # built and kept
    lane = client.app.middleware_stack  # type: ignore[attr-defined]
    monkeypatch.setattr(lane, "cors", False)
    answer = client.get("/api/v1/tiers", headers={"Origin": FRONTEND})
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


def test_an_unlisted_origin_gets_no_permission(cors: tuple[TestClient, str]) -> None:
    client, _ = cors
    answer = client.get("/api/v1/tiers", headers={"Origin": ELSEWHERE})
    assert "access-control-allow-origin" not in answer.headers
    preflight = client.options(
        "/api/v1/tiers",
        headers={"Origin": ELSEWHERE, "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers


def test_authenticated_rest_works_through_preflight(cors: tuple[TestClient, str]) -> None:
    client, token = cors
    preflight = client.options(
        "/api/v1/workspaces",
        headers={
            "Origin": FRONTEND,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == FRONTEND
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in preflight.headers
    answer = client.get(
        "/api/v1/workspaces", headers={"Origin": FRONTEND, "Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == FRONTEND


def test_without_origins_no_response_carries_cors(tmp_path: Path, sqlite_template: Path) -> None:
    with TestClient(create_app(app_settings(tmp_path, sqlite_template))) as client:
        answer = client.get("/api/v1/tiers", headers={"Origin": FRONTEND})
    assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize(
    "origins", ["*", "https://app.example.com/", "https://app.example.com/path", "app.example.com"]
)
def test_only_exact_origins_are_accepted(origins: str) -> None:
    with pytest.raises(ValidationError, match="is not an origin"):
        Settings(_env_file=None, cors_origins=origins)  # type: ignore[call-arg]
