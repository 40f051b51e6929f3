"""Webhooks in production reach public addresses only, checked on the resolved address at send
time, pinned to it, redirects not followed. Each refusal beside the request going through with
the protection off."""

import ipaddress
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Route

from control_plane.outbound import NotPublicError, OutboundPolicy, is_public
from tests.fakes.server import BackgroundServer

HITS: list[str] = []


async def hook(request: Request) -> PlainTextResponse:
    HITS.append(f"{request.url.path} {request.headers.get('host')}")
    return PlainTextResponse("ok")


async def bounce(request: Request) -> RedirectResponse:
    HITS.append(request.url.path)
    return RedirectResponse("/inside", status_code=302)


@pytest.fixture
def receiver() -> Iterator[str]:
    HITS.clear()
    app = Starlette(
        routes=[
            Route("/hook", hook, methods=["POST"]),
            Route("/bounce", bounce, methods=["POST"]),
            Route("/inside", hook, methods=["POST", "GET"]),
        ]
    )
    with BackgroundServer(app) as server:
        yield server.base_url


def production(resolver: object = None, allowed: frozenset[str] = frozenset()) -> OutboundPolicy:
    if resolver is None:
        return OutboundPolicy(public_only=True, allowed_hosts=allowed)
    return OutboundPolicy(public_only=True, allowed_hosts=allowed, resolver=resolver)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.10",
        "169.254.169.254",
        "::1",
        "fd00::1",
        "0.0.0.0",  # noqa: S104 (an address under test, nothing binds to it)
        "::ffff:127.0.0.1",
        "224.0.0.1",
        # IPv4 inside IPv6: compatible, NAT64 (169.254.169.254), 6to4, Teredo, local NAT64.
        "::127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
        "2002:a9fe:a9fe::1",
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
        "64:ff9b:1::a9fe:a9fe",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", ["::127.0.0.1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::"])
def test_without_unwrapping_ipv4_inside_ipv6_passes_for_public(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert ip.is_global and not ip.is_multicast  # Python's own answer: the hole


def test_public_addresses() -> None:
    assert is_public("93.184.216.34") and is_public("2606:4700::1111")
    assert is_public("64:ff9b::5db8:d822")  # NAT64 of 93.184.216.34
    assert is_public("2002:5db8:d822::1")  # 6to4 of 93.184.216.34


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/x", "http://169.254.169.254/latest/meta-data", "http://localhost/"]
)
def test_literal_private_targets_are_refused_when_written(url: str) -> None:
    with pytest.raises(NotPublicError):
        production().check_literal(url)
    OutboundPolicy(public_only=False, allowed_hosts=frozenset()).check_literal(url)


def test_a_name_that_resolves_inside_is_refused_at_send_time(receiver: str) -> None:
    port = receiver.rsplit(":", 1)[1]
    url = f"http://hooks.example.test:{port}/hook"
    inside = production(resolver=lambda host, port: ["127.0.0.1"])
    assert inside.post_json(url, {"flag": "x"}) is None
    assert HITS == []


def test_without_the_check_the_same_name_reaches_the_inside(
    receiver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_plane import outbound

    monkeypatch.setattr(outbound, "is_public", lambda address: True)
    port = receiver.rsplit(":", 1)[1]
    url = f"http://hooks.example.test:{port}/hook"
    inside = production(resolver=lambda host, port: ["127.0.0.1"])
    response = inside.post_json(url, {"flag": "x"})
    assert response is not None and response.status_code == 200
    assert [f"/hook hooks.example.test:{port}"] == HITS


def test_the_request_goes_to_the_checked_address_with_the_original_host() -> None:
    policy = production(resolver=lambda host, port: ["93.184.216.34"])
    target, headers, extensions = policy.target("https://hooks.example.com/alert?x=1")
    assert str(target) == "https://93.184.216.34/alert?x=1"
    assert headers == {"Host": "hooks.example.com"}
    assert extensions == {"sni_hostname": "hooks.example.com"}


def test_allow_listed_hosts_and_no_redirects(receiver: str) -> None:
    allowed = production(allowed=frozenset({"127.0.0.1"}))
    response = allowed.post_json(f"{receiver}/bounce", {"flag": "x"})
    assert response is not None and response.status_code == 302
    assert HITS == ["/bounce"]  # the redirect was not followed inside
