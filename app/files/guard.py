"""The private-network guard: a download never reaches a non-public address.

It judges a URL's host before the request (literal addresses are dialled without the
resolver) and every address the resolver returns (so DNS rebinding cannot get past
it). DOWNLOAD_ALLOW_PRIVATE_NETWORKS, DOWNLOAD_ALLOWED_HOSTS and
DOWNLOAD_ALLOWED_PORTS set the policy.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Protocol

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from app.errors import PoisonError
from app.redaction import Redacted

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class GuardPolicy(Protocol):
    """What the guard reads from the download limits (app/files/fetch.py)."""

    @property
    def allow_private_networks(self) -> bool: ...
    @property
    def allowed_hosts(self) -> frozenset[str]: ...  # "host" or "host:port"
    @property
    def allowed_ports(self) -> frozenset[int]: ...  # empty: any port


def _forbidden(ip: IPAddress | str) -> bool:
    """True unless ``ip`` is a global unicast address."""
    if isinstance(ip, str):
        try:
            ip = ipaddress.ip_address(ip)
        except ValueError:
            return True  # not an address we can judge: fail closed
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour  # these reach an IPv4 address: judge it
        if (embedded is not None and _forbidden(embedded)) or ip.is_site_local:
            return True
    # is_global alone lets multicast through (and some reserved ranges on older Pythons).
    return (not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local
            or ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def _literal_ip(host: str) -> IPAddress | None:
    """The address a literal host names, in every spelling the C library accepts."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:  # inet_aton semantics: 2130706433, 0177.0.0.1, 0x7f.1, 127.1 ...
        return None if ":" in host else ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


class DestinationGuard:
    """The SSRF policy, shared by the URL check and the resolver."""

    def __init__(self, limits: GuardPolicy) -> None:
        self._open = limits.allow_private_networks
        self._hosts = frozenset(h.lower() for h in limits.allowed_hosts)
        self._ports = limits.allowed_ports

    def exempt(self, host: str, port: int | None) -> bool:
        host = host.lower()
        return self._open or bool({host, f"{host}:{port}", f"[{host}]:{port}"} & self._hosts)

    def check_url(self, url: URL) -> None:
        where = Redacted(url)
        if url.scheme not in ("http", "https") or not url.raw_host:
            raise PoisonError("unsupported_url", f"only http(s) URLs with a host: {where}")
        if url.raw_user is not None or url.raw_password is not None:
            raise PoisonError("unsupported_url", f"credentials in URL refused: {where}")
        if self._ports and url.port not in self._ports:
            raise PoisonError("blocked_destination",
                              f"port {url.port} is not in DOWNLOAD_ALLOWED_PORTS: {where}")
        if self.exempt(url.raw_host, url.port):
            return
        host = url.host or url.raw_host
        ip = _literal_ip(host)
        if ip is None and ":" in host:
            raise PoisonError("unsupported_url", f"unparseable IPv6 host: {where}")
        # aiohttp dials digit-and-dot or IPv6 hosts without the resolver: judge them here.
        if ip is not None and _forbidden(ip):
            raise PoisonError("blocked_destination", f"non-public address {ip}: {where}")


class GuardedResolver(AbstractResolver):
    """Drops every resolved address the guard forbids: it judges the addresses actually
    dialled, so DNS rebinding cannot get past it; with none left, nothing is dialled."""

    def __init__(self, limits: GuardPolicy, inner: AbstractResolver | None = None) -> None:
        self._guard = DestinationGuard(limits)
        self._owns_inner = inner is None
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if self._guard.exempt(host, port):
            return found
        allowed = [r for r in found if not _forbidden(r["host"])]
        if not allowed:
            raise PoisonError("blocked_destination", f"{host} has no public address")
        return allowed

    async def close(self) -> None:
        if self._owns_inner:
            await self._inner.close()
