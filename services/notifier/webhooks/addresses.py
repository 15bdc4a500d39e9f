"""Where webhooks may go: public addresses, plus the networks configuration allows.

Checked when a subscription is registered and again on every connection (DNS can change
between the two): the resolver below hands aiohttp only addresses it has checked, so the
address checked is the address connected to.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from shared.errors import TierflowError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class AddressRefused(TierflowError):
    """A webhook URL or the address it resolves to is not allowed."""


def parse_networks(raw: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (`127.0.0.0/8,::1/128`), as the settings validated them."""
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in raw.split(",") if p.strip())


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64), if any."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_allowed(ip: IPAddress, allowed: Sequence[Network]) -> bool:
    """Public unicast, or inside a network configuration allows."""
    if any(ip in network for network in allowed):
        return True
    inner = embedded_ipv4(ip)
    if inner is not None and not address_allowed(inner, allowed):
        return False
    return ip.is_global and not ip.is_multicast


def check_address(text: str, allowed: Sequence[Network]) -> None:
    """Raise AddressRefused unless `text` (an IP literal) may be connected to."""
    ip = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone
    if not address_allowed(ip, allowed):
        raise AddressRefused(
            f"{ip} is a loopback, private, link-local, multicast or reserved address"
        )


def url_host(url: str) -> str:
    """The host of an http(s) URL without credentials; AddressRefused says what is wrong."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise AddressRefused("not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise AddressRefused("the scheme must be http or https")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("credentials in the URL are not allowed")
    if not parts.hostname:
        raise AddressRefused("the URL has no host")
    return parts.hostname


def ip_literal(host: str) -> bool:
    """Whether `host` is written as an IP address (aiohttp then skips the resolver)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class GuardedResolver(AbstractResolver):
    """Resolves with `inner`, then refuses the name if any address is not allowed."""

    def __init__(self, inner: AbstractResolver, allowed: Sequence[Network]) -> None:
        self._inner = inner
        self._allowed = tuple(allowed)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The inner resolver's answer, every address checked."""
        results = await self._inner.resolve(host, port, family)
        for result in results:
            check_address(result["host"], self._allowed)
        return results

    async def close(self) -> None:
        """Close the inner resolver."""
        await self._inner.close()


class UrlGuard:
    """The allowed networks, and a resolver for aiohttp's connector that enforces them."""

    def __init__(self, inner: AbstractResolver, allowed: Sequence[Network]) -> None:
        self.allowed = tuple(allowed)
        self.resolver = GuardedResolver(inner, self.allowed)

    async def check(self, url: str) -> None:
        """At registration: raise AddressRefused unless every address of the host is allowed."""
        host = url_host(url)
        if ip_literal(host):
            check_address(host, self.allowed)
            return
        try:
            await self.resolver.resolve(host, 0, socket.AF_UNSPEC)
        except OSError as exc:
            raise AddressRefused(f"{host} does not resolve ({exc.strerror or exc})") from None

    def check_literal(self, url: str) -> None:
        """At connect time: aiohttp connects to an IP literal without asking the resolver."""
        host = url_host(url)
        if ip_literal(host):
            check_address(host, self.allowed)
