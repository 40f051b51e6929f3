"""The run-wide secret scanner finds keys, and redaction keeps them out of logs."""

import logging

from control_plane.logging import redact
from tests import conftest

KEY = "xai-" + "ScannerCheckKey0123456789abcd"


def test_scanner_flags_a_raw_key_and_not_a_redacted_one() -> None:
    handler = conftest.SecretScanningHandler()
    before = len(conftest.SECRET_LEAKS)
    handler.emit(logging.LogRecord("t", logging.INFO, __file__, 1, f"key {KEY}", None, None))
    assert len(conftest.SECRET_LEAKS) == before + 1
    del conftest.SECRET_LEAKS[before:]  # the planted leak is this test's own
    handler.emit(
        logging.LogRecord("t", logging.INFO, __file__, 1, redact(f"key {KEY}"), None, None)
    )
    assert len(conftest.SECRET_LEAKS) == before


def test_response_scan_skips_only_session_configs() -> None:
    before = len(conftest.SECRET_LEAKS)
    conftest.scan_response("/api/v1/workspaces/a/agents/b/session-config", KEY)
    assert len(conftest.SECRET_LEAKS) == before
    conftest.scan_response("/api/v1/workspaces/a/settings/api-keys", KEY)
    assert len(conftest.SECRET_LEAKS) == before + 1
    del conftest.SECRET_LEAKS[before:]
