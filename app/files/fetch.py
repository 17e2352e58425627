"""Download one file: bounded in size and time, decompressed, never from a private network.

The private-network guard is app/files/guard.py; a transfer cut off half-way resumes
with a Range request where the server allows (app/files/resume.py). Every failure is a
TransientError or PoisonError with a stable reason code. Messages hold only
``redact_url`` forms (app/redaction.py), raised ``from None``: signed URLs carry secrets
in the query and aiohttp's exception texts include the full URL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import hdrs
from yarl import URL

from app.errors import PoisonError, TransientError
from app.files.decode import BodyDecoder, Sink, content_decoder, decode_chunk
from app.files.guard import DestinationGuard, GuardedResolver
from app.files.resume import Answer, Transfer
from app.redaction import Redacted, redact_url

if TYPE_CHECKING:
    from app.config import Settings

log = logging.getLogger(__name__)
# The final URL and its Content-Type, before a body is read from its first byte (again
# if the download starts over).
OnResponse = Callable[[str, str | None], None]

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

    @classmethod
    def from_settings(cls, settings: Settings) -> DownloadLimits:
        return cls(
            max_file_bytes=settings.max_file_bytes,
            connect_timeout_s=settings.download_connect_timeout_s,
            read_timeout_s=settings.download_read_timeout_s,
            total_timeout_s=settings.download_total_timeout_s,
            max_concurrent=settings.max_concurrent_downloads,
            allow_private_networks=settings.download_allow_private_networks,
            allowed_hosts=settings.allowed_hosts,
            allowed_ports=settings.allowed_ports,
            max_redirects=settings.download_max_redirects,
        )


def _describe(exc: BaseException) -> str:
    # The class and OS reason only: aiohttp's messages may contain the full URL.
    reason = exc.strerror if isinstance(exc, OSError) else None
    return f"{type(exc).__name__} ({reason})" if reason else type(exc).__name__


class _Interrupted(Exception):
    """The connection ended before the body; ``error`` is the failure if it cannot resume."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _redirect_target(resp: aiohttp.ClientResponse, url: URL) -> URL | None:
    """None for a 2xx, the next URL for a redirect; any other status raises."""
    where, status = Redacted(url), resp.status
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

    def __init__(self, limits: DownloadLimits,
                 resumed: Callable[[], None] | None = None) -> None:
        self._limits = limits
        self._resumed = resumed  # told of each resumption, for the metric
        self._guard = DestinationGuard(limits)
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

    async def download(self, url: str, count: Callable[[bytes], None] | None = None,
                       on_response: OnResponse | None = None, sink: Sink | None = None) -> bytes:
        """The decompressed body of ``url``, after at most ``max_redirects`` redirects.

        ``count`` sees each decoded piece before it is kept (and may raise to stop);
        ``on_response`` the final URL and its Content-Type, before the body; ``sink``, if
        given, keeps the pieces instead of memory (and says what is returned)."""
        session = self._session
        if session is None:
            raise RuntimeError("Downloader.start() has not been awaited")
        async with self._slots:
            try:
                # One deadline for the whole chain; aiohttp's total is per request.
                async with asyncio.timeout(self._limits.total_timeout_s):
                    return await self._follow(session, url, count, on_response, sink)
            except TimeoutError:
                raise TransientError("download_timeout", f"timed out: {redact_url(url)}") from None

    async def _follow(self, session: aiohttp.ClientSession, start: str,
                      count: Callable[[bytes], None] | None,
                      on_response: OnResponse | None, sink: Sink | None = None) -> bytes:
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
                    if on_response is not None:
                        on_response(str(url), resp.headers.get(hdrs.CONTENT_TYPE))
                    return await self._read_body(session, resp, url, count, on_response, sink)
            finally:
                resp.release()  # closes the connection instead if the body is unread
            url = target
        raise PoisonError("too_many_redirects",
                          f"over {self._limits.max_redirects} redirects: {redact_url(start)}")

    async def _open(self, session: aiohttp.ClientSession, url: URL,
                    headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        where = Redacted(url)
        try:
            return await session.get(url, allow_redirects=False, headers=headers)
        except TimeoutError:
            raise
        except aiohttp.InvalidURL:
            raise PoisonError("unsupported_url", f"unusable URL {where}") from None
        except aiohttp.ClientError as exc:
            raise TransientError("connection_error", f"{_describe(exc)}: {where}") from None

    async def _read_body(self, session: aiohttp.ClientSession, resp: aiohttp.ClientResponse,
                         url: URL, count: Callable[[bytes], None] | None,
                         on_response: OnResponse | None, sink: Sink | None = None) -> bytes:
        """The decoded body; a transfer cut off half-way goes on from where it stopped, or
        from the first byte if the server sends the whole file again."""
        where, transfer = Redacted(url), Transfer.of(resp.headers)
        body = self._decoder(resp, where, count, sink)
        try:
            while True:
                try:
                    await _receive(resp, body, transfer, where)
                    return body.finish()
                except _Interrupted as cut:
                    resp.release()  # the broken connection is closed, never reused
                    resp, answer = await self._resume(session, url, transfer, cut.error)
                if answer is Answer.START_OVER:  # what was kept goes with its decoder
                    if on_response is not None:
                        on_response(str(url), resp.headers.get(hdrs.CONTENT_TYPE))
                    transfer.start_over(resp.headers)
                    if sink is not None:
                        sink.restart()
                    body = self._decoder(resp, where, count, sink)
        finally:
            resp.release()

    def _decoder(self, resp: aiohttp.ClientResponse, where: Redacted,
                 count: Callable[[bytes], None] | None, sink: Sink | None) -> BodyDecoder:
        """A decoder for a whole body, refused unread if it says it is too large."""
        limit = self._limits.max_file_bytes
        outer = content_decoder(resp, where)
        expected = resp.content_length
        if outer is None and expected is not None and expected > limit:
            raise PoisonError("file_too_large", f"Content-Length {expected} > {limit}: {where}")
        return BodyDecoder(outer, limit, where, count, sink)

    async def _resume(self, session: aiohttp.ClientSession, url: URL, transfer: Transfer,
                      error: Exception) -> tuple[aiohttp.ClientResponse, Answer]:
        """The answer to a Range request for the rest, if one may be made and its answer
        is of use; else ``error``, the attempt's failure as it was."""
        if not transfer.may_resume():
            raise error from None
        transfer.resumes += 1
        if self._resumed is not None:
            self._resumed()
        log.info("download cut off, resuming", extra={
            "event": "download_resumed", "url": redact_url(str(url)),
            "bytes_kept": transfer.received, "resumes": transfer.resumes})
        resp = await self._open(session, url, transfer.request_headers())
        answer = transfer.answer(resp.status, resp.headers)
        if answer is Answer.GIVE_UP:
            resp.release()
            raise error from None
        return resp, answer


async def _receive(resp: aiohttp.ClientResponse, body: BodyDecoder, transfer: Transfer,
                   where: Redacted) -> None:
    """Decode the bytes of ``resp`` into ``body``; _Interrupted if the connection ends
    (or goes silent past the read timeout) before they all came."""
    expected, got = resp.content_length, 0
    try:
        async for chunk in resp.content.iter_any():
            got += len(chunk)
            transfer.received += len(chunk)
            await decode_chunk(body, chunk)
    except aiohttp.ServerTimeoutError as exc:  # silent for DOWNLOAD_READ_TIMEOUT_S
        raise _Interrupted(exc) from None
    except TimeoutError:
        raise
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
        raise _Interrupted(TransientError(
            "truncated_body", f"{_describe(exc)} mid-body: {where}")) from None
    if expected is not None and got < expected:
        raise _Interrupted(TransientError("truncated_body", f"{got} of {expected} bytes: {where}"))
