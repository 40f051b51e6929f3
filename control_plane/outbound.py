"""Requests the control plane sends to addresses its users chose (the guard's webhook).

In production such a request may only reach a public address: the host is resolved at send time,
every address it resolves to is checked (loopback, private, link-local — which includes cloud
metadata at 169.254.169.254 —, multicast, reserved and unspecified are refused), and the request
goes to the checked address itself, so a DNS answer that changes between check and connect
cannot redirect it. Redirects are not followed. Hosts in SWITCHBOARD_WEBHOOK_ALLOWED_HOSTS are
let through as they are (an internal alerting service, say).
"""

import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
from sqlalchemy import event
from sqlmodel import Session

from control_plane.settings import Settings

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]


class NotPublicError(ValueError):
    """The target is not a public address and is not on the allow-list."""


def resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


# IPv6 ranges that carry an IPv4 address in their last 32 bits: IPv4-compatible (::a.b.c.d),
# NAT64 (64:ff9b::/96). The local-use NAT64 prefix embeds it elsewhere: never public.
IPV4_IN_LOW_BITS = (ipaddress.ip_network("::/96"), ipaddress.ip_network("64:ff9b::/96"))
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo's
    server and client): a packet to it may end up at them."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if any(ip in network for network in IPV4_IN_LOW_BITS):
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)
    return []


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in LOCAL_NAT64:
            return False
        inner = embedded_ipv4(ip)
        if inner:
            return all(is_public(str(v4)) for v4 in inner)
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class OutboundPolicy:
    public_only: bool
    allowed_hosts: frozenset[str]
    timeout_seconds: float = 5.0
    resolver: Resolver = resolve

    @classmethod
    def from_settings(cls, settings: Settings) -> "OutboundPolicy":
        hosts = settings.webhook_allowed_hosts or ""
        return cls(
            public_only=settings.environment == "production",
            allowed_hosts=frozenset(h.strip().lower() for h in hosts.split(",") if h.strip()),
        )

    def check_literal(self, url: str) -> None:
        """At write time: refuse what can be told without DNS (an IP literal, localhost)."""
        host = httpx.URL(url).host.lower()
        if not self.public_only or host in self.allowed_hosts:
            return
        if host == "localhost" or host.endswith(".localhost"):
            raise NotPublicError(f"{host} is not a public address")
        try:
            literal = is_public(host)
        except ValueError:
            return  # a name: checked on every send
        if not literal:
            raise NotPublicError(f"{host} is not a public address")

    def target(self, url: str) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
        """The URL to connect to (the checked address), the Host header and the TLS name."""
        parsed = httpx.URL(url)
        host = parsed.host.lower()
        if not self.public_only or host in self.allowed_hosts:
            return parsed, {}, {}
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        addresses = self.resolver(host, port)
        refused = [a for a in addresses if not is_public(a)]
        if not addresses or refused:
            raise NotPublicError(f"{host} resolves to {', '.join(refused) or 'nothing'}")
        pinned = parsed.copy_with(host=addresses[0])
        return pinned, {"Host": parsed.netloc.decode("ascii")}, {"sni_hostname": host}

    def post_json(self, url: str, payload: Mapping[str, object]) -> httpx.Response | None:
        """POST the payload; None (and a warning in the log) when refused or not delivered."""
        try:
            target, headers, extensions = self.target(url)
            with httpx.Client(timeout=self.timeout_seconds, follow_redirects=False) as client:
                return client.post(
                    target,
                    content=json.dumps(payload),
                    headers={"Content-Type": "application/json", **headers},
                    extensions=extensions,
                )
        except NotPublicError as exc:
            logger.warning("webhook refused: %s", exc)
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            logger.warning("webhook not delivered: %s", type(exc).__name__)
        return None


WEBHOOKS_KEY = "webhooks_after_commit"


def post_after_commit(
    session: Session, outbound: OutboundPolicy, url: str, payload: Mapping[str, object]
) -> None:
    """Send a webhook about a change this transaction makes once it commits (in the background),
    and never if it rolls back: a webhook must not announce a pause or a step that did not
    happen."""
    session.info.setdefault(WEBHOOKS_KEY, []).append((outbound, url, dict(payload)))


def post_in_background(outbound: OutboundPolicy, url: str, payload: Mapping[str, object]) -> None:
    threading.Thread(
        target=outbound.post_json, args=(url, payload), name="webhook", daemon=True
    ).start()


@event.listens_for(Session, "after_commit")
def _send_after_commit(session: Session) -> None:
    for outbound, url, payload in session.info.pop(WEBHOOKS_KEY, []):
        post_in_background(outbound, url, payload)


@event.listens_for(Session, "after_rollback")
def _drop_after_rollback(session: Session) -> None:
    session.info.pop(WEBHOOKS_KEY, None)
