"""Switchboard and Unleash agree: the official SDK against our client API, our evaluation path
against the Unleash client specification, and scale mode against a real unleash-server 7.x."""

import json
import os
import random
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


def switchboard_decisions(
    http: httpx.Client, token: str, workspaces: list[str] = GRID
) -> dict[str, bool]:
    return {
        w: http.get(
            f"/api/v1/flags/{FLAG}/decision", params={"workspace_id": w}, headers=auth(token)
        ).json()["enabled"]
        for w in workspaces
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


def node_sdk_decisions(base_url: str, token: str, workspaces: list[str]) -> dict[str, bool]:
    import subprocess

    result = subprocess.run(
        ["node", str(NODE_CHECK), f"{base_url}/api", token, FLAG, *workspaces],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    decisions: dict[str, bool] = json.loads(result.stdout.strip().splitlines()[-1])
    return decisions


def require_node_sdk() -> None:
    import shutil

    modules = NODE_CHECK.parent / "node_modules" / "unleash-client"
    if shutil.which("node") is None or not modules.exists():
        skip_or_fail("Node.js or the unleash-client package is missing: make test runs npm ci")


# Workspaces nobody chose: the percentage steps exercise the SDK's own hashing (murmurhash in
# JavaScript, independent of the Rust engine we embed) on ids spread like real ones.
SWEEP = [f"ws-{random.Random(20261125 + i).getrandbits(48):012x}" for i in range(1_000)]
PERCENTAGES = [0, 10, 33, 50, 90, 100]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_official_node_sdk_agrees_with_switchboard(settings: Settings, admin_token: str) -> None:
    require_node_sdk()
    with (
        BackgroundServer(create_app(settings)) as server,
        httpx.Client(base_url=server.base_url) as http,
    ):
        for step, method, path, body, expected in STEPS:
            admin_call(http, admin_token, method, path, body)
            ours = switchboard_decisions(http, admin_token)
            assert node_sdk_decisions(server.base_url, admin_token, GRID) == ours, step
            assert {w: ours[w] for w in expected} == expected, step


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_node_sdk_agrees_on_a_thousand_workspaces_at_every_percentage(
    settings: Settings, admin_token: str
) -> None:
    require_node_sdk()
    app = create_app(settings)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.base_url) as http:
        admin_call(http, admin_token, "PUT", f"/api/v1/flags/{FLAG}/stage", {"stage": "beta"})
        for percentage in PERCENTAGES:
            admin_call(
                http,
                admin_token,
                "PUT",
                f"/api/v1/flags/{FLAG}/rollout",
                {"percentage": percentage},
            )
            # Ours through the memoized gate every request uses; a sample through REST too.
            gate = app.state.flag_gate
            ours = {w: gate.decide(FLAG, w).enabled for w in SWEEP}
            sample = SWEEP[:: len(SWEEP) // 20]
            assert {w: ours[w] for w in sample} == switchboard_decisions(http, admin_token, sample)
            node = node_sdk_decisions(server.base_url, admin_token, SWEEP)
            disagreements = [w for w in SWEEP if node[w] != ours[w]]
            assert disagreements == [], (percentage, disagreements[:5])
            share = 100 * sum(ours.values()) / len(SWEEP)
            assert abs(share - percentage) <= 5, (percentage, share)


SPEC_DIR = Path(
    os.environ.get(
        "SWITCHBOARD_TEST_UNLEASH_SPEC_DIR",
        "tests/unleash_server/node_modules/@unleash/client-specification/specifications",
    )
)
# @unleash/client-specification 6.1.0 (pinned in tests/unleash_server/package.json).
SPEC_FILES, SPEC_CASES, SPEC_VARIANT_CASES = 22, 227, 52


def spec_failures(evaluator: EmbeddedEvaluator, document: dict[str, Any]) -> list[str]:
    """Every case of one specification file, evaluated through the memoized path production
    uses (twice: the first fills the memo, the second must answer the same from it)."""
    failures = []
    for case in document.get("tests", []):
        for attempt in ("cold", "memoized"):
            if evaluator.check(case["toggleName"], case["context"]) != case["expectedResult"]:
                failures.append(f"{case['description']} ({attempt})")
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
    return failures


def run_specification(evaluator: EmbeddedEvaluator) -> tuple[int, int, int, list[str]]:
    """All files in order through ONE evaluator, as a long-lived process sees state changes:
    a memo that outlived a load would answer one file's toggles with another's decisions."""
    names = json.loads((SPEC_DIR / "index.json").read_text())
    cases = variant_cases = 0
    failures: list[str] = []
    for name in names:
        document = json.loads((SPEC_DIR / name).read_text())
        evaluator.load_document(document["state"])
        cases += len(document.get("tests", []))
        variant_cases += len(document.get("variantTests", []))
        failures += [f"{name}: {f}" for f in spec_failures(evaluator, document)]
    return len(names), cases, variant_cases, failures


def spec_evaluator() -> EmbeddedEvaluator:
    if not (SPEC_DIR / "index.json").exists():
        skip_or_fail("@unleash/client-specification not installed: make test runs npm ci")
    return EmbeddedEvaluator(Settings(_env_file=None))  # type: ignore[call-arg]


def answers_after_the_flags_are_gone(evaluator: EmbeddedEvaluator) -> set[bool]:
    """Every case that was on, asked again after an empty state is loaded: a memo that outlived
    the load would still say yes."""
    evaluator.load_document({"version": 2, "features": []})
    answers = set()
    for name in json.loads((SPEC_DIR / "index.json").read_text()):
        for case in json.loads((SPEC_DIR / name).read_text()).get("tests", []):
            if case["expectedResult"]:
                answers.add(evaluator.check(case["toggleName"], case["context"]))
    return answers


def test_unleash_client_specification_through_the_memoized_path() -> None:
    evaluator = spec_evaluator()
    files, cases, variant_cases, failures = run_specification(evaluator)
    assert (files, cases, variant_cases) == (SPEC_FILES, SPEC_CASES, SPEC_VARIANT_CASES)
    assert failures == []
    assert answers_after_the_flags_are_gone(evaluator) == {False}


def test_a_memo_that_survives_a_new_state_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    evaluator = spec_evaluator()
    original = EmbeddedEvaluator.load_document

    def load_keeping_the_memo(self: EmbeddedEvaluator, document: dict[str, Any]) -> None:
        memo = self._memo
        original(self, document)
        self._memo = memo

    monkeypatch.setattr(EmbeddedEvaluator, "load_document", load_keeping_the_memo)
    *_, failures = run_specification(evaluator)
    assert failures == []  # the specification's files share no (toggle, context) pair...
    assert True in answers_after_the_flags_are_gone(evaluator)  # ...but stale answers show


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
