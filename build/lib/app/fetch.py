"""Download one file: bounded in size and time, decompressed, never from a private network.

Every failure is a TransientError or PoisonError with a stable reason code. Messages hold
only ``redact_url`` forms, raised ``from None``: signed URLs carry secrets in the query and
aiohttp's exception texts include the full URL."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import hdrs
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from app.errors import PoisonError, TransientError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_CONTENT_WBITS = {"gzip": _GZIP_WBITS, "x-gzip": _GZIP_WBITS, "deflate": zlib.MAX_WBITS}
_PIECE = 256 * 1024  # most output per zlib call, so a bomb is caught after one piece
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class DownloadLimits:
    max_file_bytes: int = 64 * 1024 * 1024  # on the DECOMPRESSED size
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0  # between reads: a drip feed ends
    total_timeout_s: float = 120.0
    max_concurrent: int = 32  # global across all partitions
    max_redirects: int = 3
    allow_private_networks: bool = False
    allowed_hosts: frozenset[str] = frozenset()  # "host" or "host:port", exempt from the block
    allowed_ports: frozenset[int] = frozenset()  # empty: any port


def redact_url(url: str) -> str:
    """The URL without userinfo, query or fragment, safe for logs and the DLQ."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


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


class _Guard:
    """The SSRF policy, shared by the URL check and the resolver."""

    def __init__(self, limits: DownloadLimits) -> None:
        self._open = limits.allow_private_networks
        self._hosts = frozenset(h.lower() for h in limits.allowed_hosts)
        self._ports = limits.allowed_ports

    def exempt(self, host: str, port: int | None) -> bool:
        host = host.lower()
        return self._open or bool({host, f"{host}:{port}", f"[{host}]:{port}"} & self._hosts)

    def check_url(self, url: URL) -> None:
        where = redact_url(str(url))
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

    def __init__(self, limits: DownloadLimits, inner: AbstractResolver | None = None) -> None:
        self._guard = _Guard(limits)
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


class _Inflate:
    """One compressed layer, inflated as it arrives in bounded pieces."""

    def __init__(self, wbits: int, where: str) -> None:
        self._wbits, self._where = wbits, where
        self._z = zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            if self._z.eof:
                data = self._z.unused_data + data
                if not data:
                    return
                if self._wbits != _GZIP_WBITS:
                    raise self._bad("data after end of stream")
                self._z = zlib.decompressobj(self._wbits)  # concatenated gzip members
            try:
                out = self._z.decompress(data, _PIECE)
            except zlib.error as exc:
                raise self._bad(f"corrupt stream ({exc})") from None
            data = self._z.unconsumed_tail
            if out:
                yield out
            # A full piece may leave output pending inside zlib: ask again.
            if not data and len(out) < _PIECE and not self._z.unused_data:
                return

    def finish(self) -> None:
        if not self._z.eof:  # truncated data must never pass as a whole file
            raise self._bad("stream ends early")

    def _bad(self, what: str) -> PoisonError:
        return PoisonError("bad_gzip", f"{what}: {self._where}")


class _Body:
    """Decodes the Content-Encoding, then a gzip file inside, capping the decoded size."""

    def __init__(self, outer: _Inflate | None, limit: int, where: str) -> None:
        self._outer, self._limit, self._where = outer, limit, where
        self._inner: _Inflate | None = None
        self._head: bytes | None = b""  # bytes kept until the gzip magic can be sniffed
        self._out: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        for piece in self._outer.feed(chunk) if self._outer else (chunk,):
            if self._head is not None:
                self._head += piece
                if len(self._head) < len(_GZIP_MAGIC):
                    continue
                piece, self._head = self._head, None
                if piece.startswith(_GZIP_MAGIC):
                    self._inner = _Inflate(_GZIP_WBITS, self._where)
            for out in self._inner.feed(piece) if self._inner else (piece,):
                self._keep(out)

    def finish(self) -> bytes:
        if self._outer:
            self._outer.finish()
        if self._head:  # a body shorter than the gzip magic
            self._keep(self._head)
        if self._inner:
            self._inner.finish()
        return b"".join(self._out)

    def _keep(self, piece: bytes) -> None:
        self._size += len(piece)
        if self._size > self._limit:
            raise PoisonError("file_too_large",
                              f"decoded body exceeds {self._limit} bytes: {self._where}")
        self._out.append(piece)


def _content_decoder(resp: aiohttp.ClientResponse, where: str) -> _Inflate | None:
    coding = resp.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    if coding in ("", "identity"):
        return None
    if coding not in _CONTENT_WBITS:  # we asked for gzip or deflate only
        raise PoisonError("bad_gzip", f"unsupported Content-Encoding {coding!r}: {where}")
    return _Inflate(_CONTENT_WBITS[coding], where)


def _describe(exc: BaseException) -> str:
    # The class and OS reason only: aiohttp's messages may contain the full URL.
    reason = exc.strerror if isinstance(exc, OSError) else None
    return f"{type(exc).__name__} ({reason})" if reason else type(exc).__name__


def _redirect_target(resp: aiohttp.ClientResponse, url: URL) -> URL | None:
    """None for a 2xx, the next URL for a redirect; any other status raises."""
    where, status = redact_url(str(url)), resp.status
    location = resp.headers.get(hdrs.LOCATION)
    if 200 <= status < 300:
        return None
    if status in (408, 429) or 500 <= status < 600:
        raise TransientError("http_transient", f"HTTP {status} from {where}")
    if status not in _REDIRECTS or not location:
        raise PoisonError("http_error", f"HTTP {status} from {where}")
    try:
        return url.join(URL(location)).with_fragment(None)
    except ValueError:
        raise PoisonError("unsupported_url", f"unusable redirect from {where}") from None


class Downloader:
    """Downloads files over one shared session, at most ``max_concurrent`` at a time."""

    def __init__(self, limits: DownloadLimits) -> None:
        self._limits = limits
        self._guard = _Guard(limits)
        self._slots = asyncio.Semaphore(limits.max_concurrent)
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        lim = self._limits
        self._resolver = GuardedResolver(lim)
        # The semaphore bounds use, so the pool never makes a download wait.
        connector = aiohttp.TCPConnector(limit=lim.max_concurrent, resolver=self._resolver)
        timeout = aiohttp.ClientTimeout(
            total=lim.total_timeout_s, connect=lim.connect_timeout_s,
            sock_connect=lim.connect_timeout_s, sock_read=lim.read_timeout_s)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, trust_env=False, auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(), headers={hdrs.ACCEPT_ENCODING: "gzip, deflate"})

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        resolver, self._resolver = self._resolver, None
        if resolver is not None:
            await resolver.close()

    async def download(self, url: str) -> bytes:
        """The decompressed body of ``url``, after at most ``max_redirects`` redirects."""
        session = self._session
        if session is None:
            raise RuntimeError("Downloader.start() has not been awaited")
        async with self._slots:
            try:
                # One deadline for the whole chain; aiohttp's total is per request.
                async with asyncio.timeout(self._limits.total_timeout_s):
                    return await self._follow(session, url)
            except TimeoutError:
                raise TransientError("download_timeout", f"timed out: {redact_url(url)}") from None

    async def _follow(self, session: aiohttp.ClientSession, start: str) -> bytes:
        try:
            url = URL(start)
        except (ValueError, TypeError):
            raise PoisonError("unsupported_url", f"malformed URL {redact_url(start)}") from None
        for _ in range(self._limits.max_redirects + 1):
            self._guard.check_url(url)
            resp = await self._open(session, url)
            try:
                target = _redirect_target(resp, url)
                if target is None:
                    return await self._read_body(resp, url)
            finally:
                resp.release()  # closes the connection instead if the body is unread
            url = target
        raise PoisonError("too_many_redirects",
                          f"over {self._limits.max_redirects} redirects: {redact_url(start)}")

    async def _open(self, session: aiohttp.ClientSession, url: URL) -> aiohttp.ClientResponse:
        where = redact_url(str(url))
        try:
            return await session.get(url, allow_redirects=False)
        except TimeoutError:
            raise
        except aiohttp.InvalidURL:
            raise PoisonError("unsupported_url", f"unusable URL {where}") from None
        except aiohttp.ClientError as exc:
            raise TransientError("connection_error", f"{_describe(exc)}: {where}") from None

    async def _read_body(self, resp: aiohttp.ClientResponse, url: URL) -> bytes:
        where, limit = redact_url(str(url)), self._limits.max_file_bytes
        outer = _content_decoder(resp, where)
        expected = resp.content_length
        if outer is None and expected is not None and expected > limit:
            raise PoisonError("file_too_large", f"Content-Length {expected} > {limit}: {where}")
        body = _Body(outer, limit, where)
        received = 0
        try:
            async for chunk in resp.content.iter_any():
                received += len(chunk)
                body.feed(chunk)
        except TimeoutError:
            raise
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise TransientError("truncated_body", f"{_describe(exc)} mid-body: {where}") from None
        if expected is not None and received < expected:
            raise TransientError("truncated_body", f"{received} of {expected} bytes: {where}")
        return body.finish()
