"""Switchboard and Unleash agree: the official SDK against our client API, our evaluation path
against the Unleash client specification, and scale mode against a real unleash-server 7.x."""

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from UnleashClient import UnleashClient

from control_plane.app import create_app
from control_plane.rollout.engine import EmbeddedEvaluator
from control_plane.settings import Settings
from tests.conftest import UnleashServer, auth, skip_or_fail
from tests.fakes.server import BackgroundServer

FLAG = "grok-realtime-tier"
GRID = ["acme", "globex", "initech", *[f"ws-{i:02d}" for i in range(17)]]


def admin_call(http: httpx.Client, token: str, method: str, path: str, body: Any = None) -> None:
    response = http.request(method, path, json=body, headers=auth(token))
    assert response.status_code == 200, response.text


# Each step changes the rollout through Switchboard's REST API; what is expected of a few
# workspaces is spelled out, the rest must simply agree between the two evaluators.
STEPS: list[tuple[str, str, str, Any, dict[str, bool]]] = [
    (
        "internal alpha",
        "PUT",
        "/api/v1/cohorts/internal",
        {"members": ["acme"]},
        {"acme": True, "globex": False},
    ),
    (
        "beta cohort filled",
        "PUT",
        "/api/v1/cohorts/beta-1",
        {"members": ["globex"]},
        {"globex": False},
    ),
    (
        "beta",
        "PUT",
        f"/api/v1/flags/{FLAG}/stage",
        {"stage": "beta"},
        {"acme": True, "globex": True, "initech": False},
    ),
    (
        "beta 40%",
        "PUT",
        f"/api/v1/flags/{FLAG}/rollout",
        {"percentage": 40},
        {"acme": True, "globex": True},
    ),
    ("second cohort", "PUT", "/api/v1/cohorts/beta-2", {"members": ["initech"]}, {}),
    (
        "beta-2 in",
        "PUT",
        f"/api/v1/flags/{FLAG}/rollout",
        {"beta_cohorts": ["beta-1", "beta-2"]},
        {"initech": True},
    ),
    ("ga", "PUT", f"/api/v1/flags/{FLAG}/stage", {"stage": "ga"}, dict.fromkeys(GRID, True)),
    ("killed", "POST", f"/api/v1/flags/{FLAG}/kill", None, dict.fromkeys(GRID, False)),
    ("resumed", "POST", f"/api/v1/flags/{FLAG}/resume", None, dict.fromkeys(GRID, True)),
    ("off", "PUT", f"/api/v1/flags/{FLAG}/stage", {"stage": "off"}, dict.fromkeys(GRID, False)),
]


@pytest.fixture
def admin_token(settings: Settings) -> str:
    from sqlmodel import Session

    from control_plane.auth import service as auth_service
    from control_plane.db import make_engine
    from control_plane.workspaces.models import Workspace, WorkspaceSettings

    engine = make_engine(settings)
    with Session(engine) as session:
        for workspace_id in GRID:
            session.add(Workspace(id=workspace_id, name=workspace_id))
            session.add(WorkspaceSettings(workspace_id=workspace_id))
        session.flush()
        _, token = auth_service.create_token(session, name="admin", scopes=["admin", "service"])
        session.commit()
    engine.dispose()
    return token


def switchboard_decisions(http: httpx.Client, token: str) -> dict[str, bool]:
    return {
        w: http.get(
            f"/api/v1/flags/{FLAG}/decision", params={"workspace_id": w}, headers=auth(token)
        ).json()["enabled"]
        for w in GRID
    }


def sdk_decisions(base_url: str, token: str, tmp_path: Path) -> dict[str, bool]:
    client = UnleashClient(
        url=f"{base_url}/api",
        app_name="switchboard-compat-test",
        custom_headers={"Authorization": token},
        refresh_interval=60,
        metrics_interval=1,
        cache_directory=str(tmp_path),
    )
    client.initialize_client()
    try:
        assert client.is_initialized
        return {w: client.is_enabled(FLAG, {"properties": {"workspaceId": w}}) for w in GRID}
    finally:
        client.destroy()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_official_python_sdk_agrees_with_switchboard(
    settings: Settings, admin_token: str, tmp_path: Path
) -> None:
    with (
        BackgroundServer(create_app(settings)) as server,
        httpx.Client(base_url=server.base_url) as http,
    ):
        for index, (step, method, path, body, expected) in enumerate(STEPS):
            admin_call(http, admin_token, method, path, body)
            ours = switchboard_decisions(http, admin_token)
            sdk = sdk_decisions(server.base_url, admin_token, tmp_path / str(index))
            assert sdk == ours, step
            assert {w: ours[w] for w in expected} == expected, step


NODE_CHECK = Path(__file__).resolve().parent.parent / "unleash_server" / "node_sdk_check.js"


def node_sdk_decisions(base_url: str, token: str) -> dict[str, bool]:
    import subprocess

    result = subprocess.run(
        ["node", str(NODE_CHECK), f"{base_url}/api", token, FLAG, *GRID],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    decisions: dict[str, bool] = json.loads(result.stdout.strip().splitlines()[-1])
    return decisions


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_official_node_sdk_agrees_with_switchboard(settings: Settings, admin_token: str) -> None:
    import shutil

    modules = NODE_CHECK.parent / "node_modules" / "unleash-client"
    if shutil.which("node") is None or not modules.exists():
        skip_or_fail("Node.js or the unleash-client package is missing: make test runs npm ci")
    with (
        BackgroundServer(create_app(settings)) as server,
        httpx.Client(base_url=server.base_url) as http,
    ):
        for step, method, path, body, expected in STEPS:
            admin_call(http, admin_token, method, path, body)
            ours = switchboard_decisions(http, admin_token)
            assert node_sdk_decisions(server.base_url, admin_token) == ours, step
            assert {w: ours[w] for w in expected} == expected, step


def specification_files() -> list[Path]:
    directory = Path(
        os.environ.get(
            "SWITCHBOARD_TEST_UNLEASH_SPEC_DIR",
            "tests/unleash_server/node_modules/@unleash/client-specification/specifications",
        )
    )
    index = directory / "index.json"
    if not index.exists():
        return []
    return [directory / name for name in json.loads(index.read_text())]


@pytest.mark.parametrize(
    "spec", specification_files() or [None], ids=lambda p: p.stem if p else "missing"
)
def test_unleash_client_specification(spec: Path | None) -> None:
    if spec is None:
        skip_or_fail("@unleash/client-specification not installed: make test runs npm ci")
    document = json.loads(spec.read_text())
    evaluator = EmbeddedEvaluator(Settings(_env_file=None))  # type: ignore[call-arg]
    evaluator.load_document(document["state"])
    failures = []
    for case in document.get("tests", []):
        if evaluator.evaluate(case["toggleName"], case["context"]) != case["expectedResult"]:
            failures.append(case["description"])
    for case in document.get("variantTests", []):
        expected = case["expectedResult"]
        got = evaluator.variant(case["toggleName"], case["context"])
        if (
            (got["name"], got["enabled"]) != (expected["name"], expected["enabled"])
            or (expected.get("payload") and got["payload"] != expected["payload"])
            or got["feature_enabled"]
            != expected.get(
                "feature_enabled", expected.get("featureEnabled", got["feature_enabled"])
            )
        ):
            failures.append(case["description"])
    assert len(document.get("tests", [])) + len(document.get("variantTests", [])) > 0
    assert failures == []


def wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return predicate()


@pytest.fixture
def scale_settings(settings: Settings, unleash_server: UnleashServer) -> Iterator[Settings]:
    yield settings.model_copy(
        update={
            "unleash_url": unleash_server.url,
            "unleash_client_token": __import__("pydantic").SecretStr(unleash_server.client_token),
            "unleash_admin_token": __import__("pydantic").SecretStr(unleash_server.admin_token),
            "unleash_refresh_interval_seconds": 1,
        }
    )


@pytest.mark.unleash
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_scale_mode_on_real_unleash_server_gives_the_same_decisions(
    scale_settings: Settings, admin_token: str, unleash_server: UnleashServer
) -> None:
    with (
        BackgroundServer(create_app(scale_settings)) as server,
        httpx.Client(base_url=server.base_url) as http,
    ):
        flags = http.get("/api/v1/flags", headers=auth(admin_token)).json()
        assert flags["mode"] == "unleash-server"
        for step, method, path, body, expected in STEPS:
            admin_call(http, admin_token, method, path, body)
            # What the embedded engine decides for the same compiled feature...
            definition = http.get(f"/api/v1/flags/{FLAG}", headers=auth(admin_token)).json()[
                "definition"
            ]
            embedded = EmbeddedEvaluator(scale_settings)
            embedded.load([definition])
            reference = {w: embedded.is_enabled(FLAG, w) for w in GRID}
            assert {w: reference[w] for w in expected} == expected, step
            # ...is what Switchboard decides through the SDK once it has polled the server.
            agreed = wait_for(
                lambda ref=reference: switchboard_decisions(http, admin_token) == ref, 15
            )
            assert agreed, (step, switchboard_decisions(http, admin_token), reference)
        # The feature really lives on the Unleash server, created by Switchboard.
        served = httpx.get(
            f"{unleash_server.url}/api/client/features",
            headers={"Authorization": unleash_server.client_token},
        ).json()
        assert FLAG in [f["name"] for f in served["features"]]
