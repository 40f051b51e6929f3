"""`RepeatedWarnings`: a kind of warning anyone can cause is logged at most once a window, the
next line saying how many were held back; every one is counted."""

import logging

import pytest

from switchboard_runtime.logging import RepeatedWarnings
from tests.clock import Clock


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_a_kind_is_said_once_a_window_and_the_next_line_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(1000.0)
    warnings = RepeatedWarnings(logging.getLogger("test.refusals"), every=60.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.refusals"):
        for index in range(5):
            warnings.warn("stream:no_token", "stream %d refused", index)
        assert lines(caplog) == ["stream 0 refused"]
        clock.now += 59.9
        warnings.warn("stream:no_token", "stream %d refused", 5)
        assert len(caplog.records) == 1
        clock.now += 0.2  # a minute after the line said
        warnings.warn("stream:no_token", "stream %d refused", 6)
    assert lines(caplog) == [
        "stream 0 refused",
        "stream 6 refused (and 5 more like it since the last such line; at most one a 60 s)",
    ]
    assert all(record.levelno == logging.WARNING for record in caplog.records)
    assert warnings.counts == {"stream:no_token": 7}


def test_kinds_are_held_back_each_on_its_own(caplog: pytest.LogCaptureFixture) -> None:
    warnings = RepeatedWarnings(logging.getLogger("test.refusals"), clock=Clock(1000.0))
    with caplog.at_level(logging.WARNING, logger="test.refusals"):
        for _ in range(3):
            warnings.warn("webhook:body_timeout", "body too slow")
            warnings.warn("issue:webhook_signature_invalid", "bad signature")
    assert lines(caplog) == ["body too slow", "bad signature"]
    assert warnings.counts == {"webhook:body_timeout": 3, "issue:webhook_signature_invalid": 3}


def test_a_quiet_kind_is_said_again_without_a_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(1000.0)
    warnings = RepeatedWarnings(logging.getLogger("test.refusals"), every=60.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.refusals"):
        warnings.warn("http:too_many_pending", "closed one")
        clock.now += 61
        warnings.warn("http:too_many_pending", "closed another")
    assert lines(caplog) == ["closed one", "closed another"]
