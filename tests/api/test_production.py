"""What a production control plane shows about itself: no public API docs, metrics only with
their token. Each guard beside the same request succeeding with the guard switched off."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from control_plane import app as app_module
from control_plane.keys.crypto import create_key_file
from control_plane.settings import Settings

METRICS_TOKEN = "metrics-" + "m" * 32


@pytest.fixture
def production(tmp_path: Path, sqlite_template: Path) -> Callable[[], FastAPI]:
    import shutil

    shutil.copyfile(sqlite_template, tmp_path / "prod.db")
    create_key_file(tmp_path / "prod.key", "prod-1")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="production",
        password_hash_cost="standard",  # the suite runs with cheapest (tests/conftest.py)
        database_url=f"sqlite:///{tmp_path}/prod.db",
        master_key_file=tmp_path / "prod.key",
        session_secret=SecretStr("s" * 48),
        metrics_token=SecretStr(METRICS_TOKEN),
    )
    return lambda: app_module.create_app(settings)


@pytest.fixture
def client_of() -> Iterator[Callable[[FastAPI], TestClient]]:
    clients: list[TestClient] = []

    def make(application: FastAPI) -> TestClient:
        clients.append(TestClient(application, base_url="https://testserver").__enter__())
        return clients[-1]

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def test_production_hides_docs_and_metrics(
    production: Callable[[], FastAPI], client_of: Callable[[FastAPI], TestClient]
) -> None:
    client = client_of(production())
    for path in ("/docs", "/redoc", "/openapi.json", "/metrics"):
        assert client.get(path).status_code == 404, path
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 404
    scraped = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status_code == 200 and "switchboard_" in scraped.text


def test_without_the_guards_production_shows_docs_and_metrics_to_anyone(
    production: Callable[[], FastAPI],
    client_of: Callable[[FastAPI], TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app_module, "docs_public", lambda settings: True)
    monkeypatch.setattr(app_module, "metrics_allowed", lambda settings, authorization: True)
    client = client_of(production())
    assert "paths" in client.get("/openapi.json").json()
    assert client.get("/metrics").status_code == 200


def admin_token(application: FastAPI) -> str:
    from sqlmodel import Session

    from control_plane.auth import service as auth_service

    with Session(application.state.engine) as session:
        _, token = auth_service.create_token(session, name="ops", scopes=["admin"])
        session.commit()
    return token


METADATA = {"webhook_url": "http://169.254.169.254/latest/meta-data/"}


def test_production_refuses_a_guard_webhook_to_the_metadata_address(
    production: Callable[[], FastAPI], client_of: Callable[[FastAPI], TestClient]
) -> None:
    application = production()
    client = client_of(application)
    headers = {"Authorization": f"Bearer {admin_token(application)}"}
    response = client.patch(
        "/api/v1/rollouts/grok-realtime-tier/guard", json=METADATA, headers=headers
    )
    assert response.status_code == 422 and response.json()["code"] == "webhook_not_public"


def test_without_the_check_the_metadata_address_is_stored(
    production: Callable[[], FastAPI],
    client_of: Callable[[FastAPI], TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from control_plane.outbound import OutboundPolicy

    monkeypatch.setattr(OutboundPolicy, "check_literal", lambda self, url: None)
    application = production()
    client = client_of(application)
    headers = {"Authorization": f"Bearer {admin_token(application)}"}
    response = client.patch(
        "/api/v1/rollouts/grok-realtime-tier/guard", json=METADATA, headers=headers
    )
    assert response.status_code == 200 and response.json()["webhook_url"] == METADATA["webhook_url"]
