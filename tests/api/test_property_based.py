"""schemathesis with every check, as a user runs it (`schemathesis run --checks all`): every phase
(examples, coverage, fuzzing, stateful), positive and negative data, under an admin, a service
and a workspace token, against a live server. The OpenAPI document must say exactly what the
code accepts; the few rules no JSON Schema can state are listed in `schemathesis_rules.py`.

Runs the real command in a subprocess; the server runs here, wrapped in the secret scanner's
server-side net, so every response is still scanned."""

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session

from control_plane.app import create_app
from control_plane.auth import service as auth_service
from control_plane.demo import seed_demo
from control_plane.settings import Settings
from tests.api import schemathesis_rules
from tests.conftest import ScannedASGI
from tests.fakes.server import BackgroundServer

SCOPES = ("admin", "service", "workspace:acme")
MAX_EXAMPLES = 30
# docs/reliability.md quotes this figure; each run generates about 5,400 cases.
MIN_CASES_PER_SCOPE = 5_000


class FuzzTarget:
    def __init__(self, base_url: str, tokens: dict[str, str]) -> None:
        self.base_url = base_url
        self.tokens = tokens


@pytest.fixture(scope="module")
def fuzz_target(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[FuzzTarget]:
    directory = tmp_path_factory.mktemp("fuzz")
    database = directory / "fuzz.db"
    shutil.copyfile(sqlite_template, database)
    app = create_app(
        Settings(
            _env_file=None,
            environment="test",
            database_url=f"sqlite:///{database}",
            master_key_file=directory / "master.key",
        )  # type: ignore[call-arg]
    )
    with Session(app.state.engine) as session:
        seed_demo(session, app.state.passwords)
        tokens = {
            scope: auth_service.create_token(session, name=f"fuzz-{scope}", scopes=[scope])[1]
            for scope in SCOPES
        }
        session.commit()
    with BackgroundServer(ScannedASGI(app)) as server:
        yield FuzzTarget(server.base_url, tokens)


def run_schemathesis(
    target: FuzzTarget, scope: str, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, int, str]:
    """One `schemathesis run`; returns (exit code, cases generated, output)."""
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{target.base_url}/openapi.json",
        "--checks",
        "all",
        # Replaced by the same check that lets through only the rules listed beside it.
        "--exclude-checks",
        "positive_data_acceptance",
        "--header",
        f"Authorization: Bearer {target.tokens[scope]}",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "1",
        # One worker: CPython 3.11's ast.parse is not safe in concurrent threads (hypothesis
        # calls it to describe filters), which shows up as a "recursion depth mismatch".
        "--workers",
        "1",
        "--no-color",
        *extra,
    ]
    environment = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "SCHEMATHESIS_HOOKS": schemathesis_rules.__name__,
        **(env or {}),
    }
    result = subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=600, check=False
    )
    output = result.stdout + result.stderr
    generated = re.search(r"(\d+) generated", output)
    return result.returncode, int(generated.group(1)) if generated else 0, output


@pytest.mark.parametrize("scope", SCOPES)
def test_every_check_passes(fuzz_target: FuzzTarget, scope: str) -> None:
    exit_code, generated, output = run_schemathesis(fuzz_target, scope)
    assert exit_code == 0, output[-6000:]
    assert generated >= MIN_CASES_PER_SCOPE, output[-2000:]


def test_a_rule_outside_the_list_fails_the_run(fuzz_target: FuzzTarget) -> None:
    """The check can fail: without its list, creating agents on tiers that do not exist (a
    schema-valid request) is reported as a schema-valid request rejected."""
    exit_code, _, output = run_schemathesis(
        fuzz_target,
        "admin",
        "--include-path",
        "/api/v1/workspaces/{workspace_id}/agents",
        "--include-method",
        "POST",
        "--phases",
        "fuzzing",
        # The first failure proves the point; the rest of the run would only repeat it.
        "--max-failures",
        "1",
        env={"SWITCHBOARD_TEST_NO_RULES_BEYOND_THE_SCHEMA": "1"},
    )
    assert exit_code != 0
    assert "Schema-valid request rejected" in output
