"""The run-wide secret scanner sees what the redactor misses, covers every HTTP client, and
fails a run in which a key leaks."""

import logging
import os
import subprocess
import sys
from pathlib import Path

from switchboard_runtime.logging import redact
from tests import conftest

KEY = "xai-" + "ScannerCheckKey0123456789abcd"
TWILIO_TOKEN = "0123456789abcdef0123456789abcdef"


def record(text: str) -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, text, None, None)


def test_a_planted_secret_is_caught_where_the_redactor_lets_it_through() -> None:
    conftest.plant_secret(TWILIO_TOKEN)
    assert redact(f"auth token {TWILIO_TOKEN}") == f"auth token {TWILIO_TOKEN}"  # plain hex
    handler = conftest.SecretScanningHandler()
    before = len(conftest.SECRET_LEAKS)
    handler.emit(record(redact(f"auth token {TWILIO_TOKEN}")))
    assert len(conftest.SECRET_LEAKS) == before + 1
    del conftest.SECRET_LEAKS[before:]  # the planted leak is this test's own
    handler.emit(record(redact(f"key {KEY}")))
    assert len(conftest.SECRET_LEAKS) == before


def test_key_shapes_inside_a_longer_token_are_not_keys() -> None:
    """A stream token's base64url MAC can hold "sk-" and 20 letters; a key starts a word."""
    token = "st1.eyJjIjoiY2FsbF8xIn0.AbXsk-MATq3vF0dLw9Rk2PzYcN8hJ_e4u"
    assert conftest.secrets_in(token) == []
    assert conftest.secrets_in("st1.x.sk-MATq3vF0dLw9Rk2PzYcN8hJ") == []
    leaked = "sk-MATq3vF0dLw9Rk2PzYcN8hJ"
    for text in (leaked, f'{{"key": "{leaked}"}}', f"key={leaked}", f"Bearer {leaked}"):
        assert conftest.secrets_in(text) == [leaked], text


def test_keys_sent_over_http_become_canaries_and_responses_are_scanned() -> None:
    conftest._plant_keys_sent(b'{"telnyx_api_key": "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="}')
    assert "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=" in conftest.CANARIES
    before = len(conftest.SECRET_LEAKS)
    conftest.scan_response("/api/v1/workspaces/a/agents/b/session-config", 200, KEY)
    assert len(conftest.SECRET_LEAKS) == before  # a session config may carry the key
    conftest.scan_response("/api/v1/workspaces/a/agents/b/session-config", 502, KEY)
    conftest.scan_response("/x", 200, "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=")
    assert len(conftest.SECRET_LEAKS) == before + 2
    del conftest.SECRET_LEAKS[before:]


PROBE = """
import logging

import httpx
import requests
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

SECRET = "{secret}"


def echo(request):
    return PlainTextResponse({answer})


def test_probe():
    app = Starlette(routes=[Route("/echo", echo, methods=["POST"])])
    with TestClient(app) as client:
        client.post("/echo", json={{"xai_api_key": SECRET}})
    logging.getLogger("probe").warning({logged})
"""


# The controller of an xdist run with the worker hand-over switched off (the twin below).
WITHOUT_HAND_OVER = (
    "import sys, pytest, tests.conftest as scanner; "
    "del scanner.pytest_testnodedown; "
    "sys.exit(pytest.main(sys.argv[1:]))"
)


def run_probe(
    tmp_path: Path, *, answer: str, logged: str, workers: int = 0, hand_over: bool = True
) -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe.py"
    secret = "xai-" + "ProbeKeyThatLeaks0123456789"
    probe.write_text(PROBE.format(secret=secret, answer=answer, logged=logged))
    runner = ["-m", "pytest"] if hand_over else ["-c", WITHOUT_HAND_OVER]
    on_workers = ["-p", "xdist.plugin", "-n", str(workers)] if workers else []
    return subprocess.run(
        [sys.executable, *runner, "-q", "-p", "tests.conftest", *on_workers, str(probe)],
        cwd=Path(conftest.__file__).resolve().parent.parent,
        # Only the scanner (and xdist) loaded: the installed plugins cost each process seconds.
        env={**os.environ, "CI": "", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_run_in_which_a_key_leaks_fails(tmp_path: Path) -> None:
    clean = run_probe(tmp_path, answer='"stored"', logged='"stored a key"')
    assert clean.returncode == 0, clean.stdout[-1500:]
    # One run, two leaks: each net names its own find, so both are proven in one process.
    leaky = run_probe(
        tmp_path, answer="SECRET[::-1][::-1]", logged='"key %s", SECRET.upper().lower()'
    )
    assert leaky.returncode != 0 and "SECRET LEAKS FOUND" in leaky.stdout, leaky.stdout
    assert "response /echo (200)" in leaky.stdout, leaky.stdout
    assert "log probe" in leaky.stdout, leaky.stdout


# One worker is enough: the probe's one test then runs in a worker process, not the controller.
def test_a_key_leaked_on_a_worker_fails_the_whole_run(tmp_path: Path) -> None:
    """On workers the leak happens in a worker process; the controller decides."""
    clean = run_probe(tmp_path, answer='"stored"', logged='"stored a key"', workers=1)
    assert clean.returncode == 0, clean.stdout[-1500:]
    assert "secret scanner: 1 responses" in clean.stdout, clean.stdout[-1500:]
    echoed = run_probe(tmp_path, answer="SECRET[::-1][::-1]", logged='"stored a key"', workers=1)
    assert echoed.returncode != 0 and "SECRET LEAKS FOUND" in echoed.stdout, echoed.stdout


def test_without_the_hand_over_a_key_leaked_on_a_worker_goes_unseen(tmp_path: Path) -> None:
    """Why the controller collects the workers' findings: without it the same leak passes."""
    echoed = run_probe(
        tmp_path, answer="SECRET[::-1][::-1]", logged='"stored a key"', workers=1, hand_over=False
    )
    assert echoed.returncode == 0, echoed.stdout[-1500:]
    assert "SECRET LEAKS FOUND" not in echoed.stdout
