"""Property-based tests over the whole OpenAPI document (schemathesis), with a real token for
each scope: no 5xx, and every response valid against the schema it declares."""

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance
from sqlmodel import Session

from control_plane.app import create_app
from control_plane.auth import service as auth_service
from control_plane.demo import seed_demo
from control_plane.settings import Settings
from tests.conftest import skip_or_fail

CASES: Counter[str] = Counter()
MIN_CASES = 2000


@pytest.fixture
def fuzz_app(tmp_path: Path, sqlite_template: Path) -> Iterator[Any]:
    database = tmp_path / "fuzz.db"
    shutil.copyfile(sqlite_template, database)
    app = create_app(
        Settings(
            _env_file=None,
            environment="test",
            database_url=f"sqlite:///{database}",
            master_key_file=tmp_path / "master.key",
        )
    )  # type: ignore[call-arg]
    with Session(app.state.engine) as session:
        seed_demo(session)
        tokens = {
            scope: auth_service.create_token(session, name=f"fuzz-{scope}", scopes=[scope])[1]
            for scope in ("admin", "service", "workspace:acme")
        }
        session.commit()
    app.state.fuzz_tokens = tokens
    yield app


CHECKS = [not_a_server_error, response_schema_conformance]
# Examples per operation and scope: about 40 operations x (30 + 15 + 15) is over 2,000 cases.
EXAMPLES = {"admin": 30, "service": 15, "workspace:acme": 15}


def run_scope(app: Any, scope: str) -> int:
    """Every operation of the OpenAPI document, with generated requests under one scope."""
    token = app.state.fuzz_tokens[scope]
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    count = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES[scope],
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            nonlocal count
            case.call_and_validate(headers=headers, checks=CHECKS)
            count += 1

        check()
    return count


@pytest.mark.parametrize("scope", list(EXAMPLES))
def test_generated_requests(fuzz_app: Any, scope: str) -> None:
    CASES[scope] = run_scope(fuzz_app, scope)
    assert CASES[scope] > 0


def test_enough_cases_ran() -> None:
    """Runs after the generated tests above (pytest keeps file order)."""
    if len(CASES) < len(EXAMPLES):
        skip_or_fail("run together with the generated tests in this module")
    assert sum(CASES.values()) >= MIN_CASES, dict(CASES)
    print(f"schemathesis cases: {dict(CASES)}, total {sum(CASES.values())}")
