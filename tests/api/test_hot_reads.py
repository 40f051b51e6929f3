"""The hot reads' lane in front of every layer (control_plane/sessions/fastpath.py) does itself
what the layers behind it would do: refuse what the request limits refuse, leave bodies to the
body bound, add the security headers, count the request under its route. Each guard beside its
twin with the guard switched off."""

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Receive, Scope, Send

from control_plane.middleware import RequestLimits
from control_plane.sessions.fastpath import HotReads
from tests.conftest import Tokens

TIERS = "/api/v1/tiers"


def warm_lane(client: TestClient) -> HotReads:
    """Read the catalogue once (the route builds and keeps it); the lane in front of the app."""
    assert client.get(TIERS).status_code == 200
    lane = client.app.middleware_stack  # type: ignore[attr-defined]
    assert isinstance(lane, HotReads)
    return lane


def too_many_headers() -> dict[str, str]:
    return {f"x-filler-{index}": "x" for index in range(150)}  # the limit is 100


def requests_behind(lane: HotReads, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests the lane passes on to the app behind it, from now on."""
    passed: list[str] = []
    behind = lane.app

    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        passed.append(scope.get("path", ""))
        await behind(scope, receive, send)

    monkeypatch.setattr(lane, "app", counted)
    return passed


def test_the_lane_answers_a_kept_read_with_the_security_headers(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    passed = requests_behind(warm_lane(client), monkeypatch)
    answer = client.get(TIERS)
    again = client.get(TIERS, headers={"If-None-Match": answer.headers["etag"]})
    assert passed == []  # both answered by the lane
    assert again.status_code == 304
    for response in (answer, again):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["content-security-policy"].startswith("default-src 'none'")


def test_too_many_headers_are_refused_on_a_hot_read_too(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    passed = requests_behind(warm_lane(client), monkeypatch)
    refused = client.get(TIERS, headers=too_many_headers())
    assert refused.status_code == 431
    assert passed == [TIERS]  # refused by the layers behind the lane
    assert refused.json()["code"] == "headers_too_large"


def test_without_the_limits_in_the_lane_a_hot_read_takes_any_headers(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    lane = warm_lane(client)
    monkeypatch.setattr(lane, "limits", RequestLimits(10**6, 10**9))
    assert client.get(TIERS, headers=too_many_headers()).status_code == 200


def test_a_read_with_a_body_goes_to_the_body_bound(client: TestClient) -> None:
    warm_lane(client)
    refused = client.request("GET", TIERS, content=b"x" * 2_000_000)
    assert refused.status_code == 413
    assert refused.json()["code"] == "request_too_large"


def test_without_the_body_check_in_the_lane_a_huge_body_is_answered(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    lane = warm_lane(client)
    monkeypatch.setattr(lane, "_takes", lambda scope: not lane.limits.refuses(scope))
    assert client.request("GET", TIERS, content=b"x" * 2_000_000).status_code == 200


def requests_counted(client: TestClient, route: str, status: str) -> float:
    text = client.app.state.metrics.render().decode()  # type: ignore[attr-defined]
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "switchboard_http_request_duration_seconds_count"
                and sample.labels == {"method": "GET", "route": route, "status": status}
            ):
                return sample.value
    return 0.0


def test_hot_reads_are_counted_under_their_route(client: TestClient) -> None:
    """Answered before the router, a hot read still counts where the route's answers do (it
    used to count as `unmatched`)."""
    answer = client.get(TIERS)
    before_200 = requests_counted(client, TIERS, "200")
    before_304 = requests_counted(client, TIERS, "304")
    client.get(TIERS)
    client.get(TIERS, headers={"If-None-Match": answer.headers["etag"]})
    assert requests_counted(client, TIERS, "200") == before_200 + 1
    assert requests_counted(client, TIERS, "304") == before_304 + 1
    assert requests_counted(client, "unmatched", "200") == 0


def test_a_limit_int_cannot_read_goes_to_the_route_not_to_a_crash(
    client: TestClient, tokens: Tokens
) -> None:
    """ "²" passes str.isdigit() but not int(); the kept page's lane must not fall over on it."""
    agents = "/api/v1/workspaces/acme/agents"
    assert client.get(agents, headers=tokens.header(tokens.acme)).status_code == 200  # kept
    answer = client.get(f"{agents}?limit=%C2%B2", headers=tokens.header(tokens.acme))
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"


def test_a_fault_in_a_lookup_leaves_the_request_to_the_routes(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    lane = warm_lane(client)
    passed = requests_behind(lane, monkeypatch)

    def broken(scope: object, path: str) -> None:
        raise RuntimeError("a fault in the lane's own lookup")

    monkeypatch.setattr(lane, "_catalogue_key", broken)
    answer = client.get(TIERS)
    assert answer.status_code == 200 and answer.json()["tiers"]
    assert passed == [TIERS]
