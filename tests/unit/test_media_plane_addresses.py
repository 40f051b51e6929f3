"""Whom the media plane counts a call socket under (pre-start places are bounded per address):
the peer, unless the peer is a trusted proxy (SWITCHBOARD_TRUSTED_PROXIES), whose
`X-Forwarded-For` then names the client. Anyone can send the header; only a trusted proxy's
is believed, else one client could spread its idle sockets over invented addresses."""

import functools
import ipaddress
from collections.abc import Callable

from switchboard_runtime.worker.media_plane import forwarded_client
from switchboard_runtime.worker.settings import is_trusted_proxy

PROXY = "10.0.0.7"
trusting_the_proxy = functools.partial(
    is_trusted_proxy, proxies=(ipaddress.ip_network("10.0.0.0/24"),)
)
trusting_nobody = functools.partial(is_trusted_proxy, proxies=())


def addresses(trusts: Callable[[str], bool]) -> list[str]:
    return [
        forwarded_client("203.0.113.9", "198.51.100.1", trusts),  # a client writing the header
        forwarded_client(PROXY, "198.51.100.1", trusts),  # the proxy, for its client
        forwarded_client(PROXY, "192.0.2.5, 198.51.100.1", trusts),  # a forged hop before it
        forwarded_client(PROXY, "198.51.100.1, 10.0.0.8", trusts),  # two trusted hops
        forwarded_client(PROXY, None, trusts),
    ]


def test_only_a_trusted_proxy_names_the_client() -> None:
    assert addresses(trusting_the_proxy) == [
        "203.0.113.9",
        "198.51.100.1",
        "198.51.100.1",
        "198.51.100.1",
        PROXY,
    ]


def test_trusting_nobody_every_socket_counts_under_its_peer() -> None:
    assert addresses(trusting_nobody) == ["203.0.113.9", PROXY, PROXY, PROXY, PROXY]


def test_trusting_any_peer_a_client_would_pick_its_own_address() -> None:
    """The twin: with the peer check switched off (every peer a proxy, every forwarded hop
    not), the header a client wrote itself is believed."""
    peers = {"203.0.113.9", PROXY}
    assert addresses(lambda address: address in peers)[0] == "198.51.100.1"
