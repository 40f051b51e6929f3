"""Under CI nothing skips for a missing part: any truthy CI turns such a skip into a failure."""

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(("ci", "outcome"), [("1", "error"), ("yes", "error"), ("", "skipped")])
def test_a_missing_postgres_fails_under_any_truthy_ci(ci: str, outcome: str) -> None:
    env = {**os.environ, "CI": ci, "SWITCHBOARD_TEST_POSTGRES_URL": ""}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
            *("tests/api/test_calls.py", "-k", "postgresql and lapsed"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = done.stdout.strip().splitlines()[-1]
    assert f"1 {outcome}" in summary, done.stdout[-2000:]
    assert done.returncode == (0 if outcome == "skipped" else 1)
