"""One rule for `If-None-Match`, whether a kept answer or a route answers it: the client holds
the version when the header is `*` alone or a list naming its tag (weakly compared)."""

import pytest
from starlette.requests import Request

from control_plane.http import conditional_json
from control_plane.served import Served

BODY = b'{"tiers":[]}'
KEPT = Served.of(BODY, "no-cache")
TAG = KEPT.etag

CASES = [
    (None, False),
    ("", False),
    (TAG, True),
    (f"W/{TAG}", True),
    (f'"other", {TAG}', True),
    (f' "other" ,W/{TAG} ', True),
    ("*", True),
    (" * ", True),
    ('"other"', False),
    ('"other", *', False),  # `*` is the whole header or nothing (RFC 9110, 13.1.2)
    (TAG[:-2] + '"', False),
]


def route_status(if_none_match: str | None) -> int:
    headers = [] if if_none_match is None else [(b"if-none-match", if_none_match.encode())]
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": headers})
    return conditional_json(request, BODY, cache_control="no-cache").status_code


@pytest.mark.parametrize(("if_none_match", "holds"), CASES)
def test_a_kept_answer_and_a_route_read_if_none_match_alike(
    if_none_match: str | None, holds: bool
) -> None:
    expected = 304 if holds else 200
    assert route_status(if_none_match) == expected
    assert KEPT.answer(None if if_none_match is None else if_none_match.encode()).status == expected
    assert KEPT.matches(if_none_match) is holds
