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
