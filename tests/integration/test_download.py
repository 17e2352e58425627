"""app.files.fetch and its guard (app.files.guard) against real HTTP servers on 127.0.0.1
(and ::1 where the host has it).

The project's file server (tools/fileserver.py) serves well-formed responses, and files
with byte ranges cut off half-way (tools/ranges.py) for resumed downloads; its raw TCP
server serves the broken ones (lying Content-Length, reset mid-body, drip feed) and
counts the connections it accepts, which is how the network guard proves it never
dialled a blocked address.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from app.errors import IngestError, PoisonError, TransientError
from app.files.fetch import Downloader, DownloadLimits
from app.files.guard import DestinationGuard, GuardedResolver
from app.files.resume import MAX_RESUMES
from app.redaction import Redacted, redact_url
from tools.fileserver import (
    FileServer,
    RawHandler,
    RawServer,
    Route,
    drip,
    head,
    read_request,
    wait_for_hangup,
)
from tools.local_kafka import free_port
from tools.ranges import CUTS, RangedFile

WAIT = 20.0  # ceiling on any single wait in these tests
DATA = b"".join(b"%06d,2024-01-01,ACME,%d.%02d\n" % (i, i, i % 100) for i in range(20_000))
MB = 1024 * 1024

# Fast limits for tests; each test overrides what it exercises.
FAST = dict(connect_timeout_s=2.0, read_timeout_s=2.0, total_timeout_s=15.0,
            allow_private_networks=True)

# -- servers --------------------------------------------------------------------------

@dataclass
class Gate:
    """Holds requests in flight until released, recording the most seen at once."""

    cond: asyncio.Condition = field(default_factory=asyncio.Condition)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    peak: int = 0

    async def held(self, request: web.Request) -> web.Response:
        """/held: answer once released, counting the requests held meanwhile."""
        if request.match_info["path"] != "held":
            return web.Response(status=404)
        async with self.cond:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.cond.notify_all()
        try:
            await asyncio.wait_for(self.release.wait(), WAIT)
        finally:
            async with self.cond:
                self.in_flight -= 1
                self.cond.notify_all()
        return web.Response(body=b"ok")


def add_files(server: FileServer) -> None:
    gz = gzip.compress(DATA)
    routes = {
        "plain.csv": Route(DATA),
        "encoded.csv": Route(gz, headers={"Content-Encoding": "gzip"}),
        "file.csv.gz": Route(gz, headers={"Content-Type": "application/gzip"}),
        "both.csv.gz": Route(gzip.compress(gz), headers={"Content-Encoding": "gzip"}),
        "deflate.csv": Route(zlib.compress(DATA), headers={"Content-Encoding": "deflate"}),
        "members.csv.gz": Route(gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:])),
        "truncated.csv.gz": Route(gz[: len(gz) // 2]),
        "truncated-encoded.csv": Route(gz[: len(gz) // 2], headers={"Content-Encoding": "gzip"}),
        "brotli.csv": Route(DATA, headers={"Content-Encoding": "br"}),
        "hops/0": Route(b"landed"),
    }
    for code in (404, 500, 503, 429, 408):
        routes[f"status/{code}"] = Route(status=code)
    for n in range(1, 5):  # relative, as servers often send
        routes[f"hops/{n}"] = Route(status=302, headers={"Location": f"/hops/{n - 1}"})
    for path, route in routes.items():
        server.add(path, route)


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
async def http(gate: Gate) -> AsyncIterator[FileServer]:
    """The files above, and /held behind the gate."""
    server = await asyncio.wait_for(FileServer(fallback=gate.held).start(), WAIT)
    add_files(server)
    yield server
    await asyncio.wait_for(server.close(), WAIT)


@pytest.fixture
async def raw() -> AsyncIterator[Callable[..., Awaitable[RawServer]]]:
    servers: list[RawServer] = []

    async def start(handler: RawHandler, ipv6: bool = False) -> RawServer:
        servers.append(await RawServer(handler).start(ipv6=ipv6))
        return servers[-1]

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def downloader() -> AsyncIterator[Callable[..., Awaitable[Downloader]]]:
    made: list[Downloader] = []

    async def make(resumed: Callable[[], None] | None = None, **limits: Any) -> Downloader:
        made.append(Downloader(DownloadLimits(**{**FAST, **limits}), resumed))
        await asyncio.wait_for(made[-1].start(), WAIT)
        return made[-1]

    yield make
    for d in made:
        await asyncio.wait_for(d.close(), WAIT)


async def fetch(d: Downloader, url: str) -> bytes:
    return await asyncio.wait_for(d.download(url), WAIT)


async def failure(d: Downloader, url: str) -> IngestError:
    with pytest.raises(IngestError) as info:
        await fetch(d, url)
    return info.value


def url_of(server: FileServer, path: str) -> str:
    return server.url(path.removeprefix("/"))


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """100 MB of zeros, gzipped (about 100 kB), compressed without holding 100 MB."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MB)
    return b"".join([z.compress(zeros) for _ in range(100)] + [z.flush()])


# -- bodies and encodings -------------------------------------------------------------

@pytest.mark.parametrize("path", ["/plain.csv", "/encoded.csv", "/file.csv.gz",
                                  "/both.csv.gz", "/deflate.csv", "/members.csv.gz"])
async def test_body_is_decoded_to_the_exact_bytes(http, downloader, path: str) -> None:
    d = await downloader()
    assert await fetch(d, url_of(http, path)) == DATA


@pytest.mark.parametrize("path", ["/truncated.csv.gz", "/truncated-encoded.csv"])
async def test_truncated_gzip_is_bad_gzip(http, downloader, path: str) -> None:
    err = await failure(await downloader(), url_of(http, path))
    assert isinstance(err, PoisonError) and err.reason == "bad_gzip"


async def test_unknown_content_encoding_is_refused(http, downloader) -> None:
    err = await failure(await downloader(), url_of(http, "/brotli.csv"))
    assert err.reason == "bad_gzip"


@pytest.mark.parametrize("encoded", [True, False], ids=["content-encoding", "gz-file"])
async def test_gzip_bomb_stops_at_the_limit(raw, downloader, bomb: bytes, encoded: bool) -> None:
    sent_rest: list[bool] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        kind = {"Content-Encoding": "gzip"} if encoded else {"Content-Type": "application/gzip"}
        writer.write(head({"Content-Length": len(bomb), **kind}) + bomb[:16384])
        await writer.drain()
        # 16 kB inflate to ~16 MB: a client that honours the limit hangs up here; one
        # that wanted more would wait for the rest and time out instead.
        sent_rest.append(not await wait_for_hangup(reader))

    server = await raw(serve)
    d = await downloader(max_file_bytes=MB, read_timeout_s=1.0)
    err = await failure(d, server.url("bomb.gz"))
    assert isinstance(err, PoisonError) and err.reason == "file_too_large"
    assert sent_rest in ([], [False])


async def test_content_length_above_limit_is_refused_unread(raw, downloader) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(head({"Content-Length": 2 * MB}))  # and no body: reading would stall
        await writer.drain()
        await wait_for_hangup(reader)

    server = await raw(serve)
    d = await downloader(max_file_bytes=MB, read_timeout_s=1.0)
    assert (await failure(d, server.url())).reason == "file_too_large"


async def test_body_shorter_than_content_length_is_truncated(raw, downloader) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(head({"Content-Length": 1000}) + DATA[:10])
        await writer.drain()  # then close: 990 bytes never come

    server = await raw(serve)
    err = await failure(await downloader(), server.url())
    assert isinstance(err, TransientError) and err.reason == "truncated_body"


async def test_connection_reset_mid_body_is_truncated(raw, downloader) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(head({"Transfer-Encoding": "chunked"}) + b"a\r\n0123456789\r\n")
        await writer.drain()
        writer.transport.abort()  # RST instead of the final chunk

    server = await raw(serve)
    err = await failure(await downloader(), server.url())
    assert isinstance(err, TransientError) and err.reason == "truncated_body"


async def test_drip_feed_times_out(raw, downloader) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await drip(writer, promised=100, count=100, byte=b"x", every=1.0)

    server = await raw(serve)
    d = await downloader(read_timeout_s=0.3, total_timeout_s=10.0)
    err = await failure(d, server.url())
    assert isinstance(err, TransientError) and err.reason == "download_timeout"


# -- statuses and connections ---------------------------------------------------------

async def test_404_is_poison(http, downloader) -> None:
    err = await failure(await downloader(), url_of(http, "/status/404"))
    assert isinstance(err, PoisonError) and err.reason == "http_error" and "404" in err.message


@pytest.mark.parametrize("code", [500, 503, 429, 408])
async def test_retryable_statuses_are_transient(http, downloader, code: int) -> None:
    err = await failure(await downloader(), url_of(http, f"/status/{code}"))
    assert isinstance(err, TransientError) and err.reason == "http_transient"
    assert str(code) in err.message


async def test_connection_refused(downloader) -> None:
    port = free_port()  # free a moment ago: nothing listens there
    err = await failure(await downloader(), f"http://127.0.0.1:{port}/x")
    assert isinstance(err, TransientError) and err.reason == "connection_error"


async def test_redirect_chain_within_limit_is_followed(http, downloader) -> None:
    d = await downloader(max_redirects=3)
    assert await fetch(d, url_of(http, "/hops/3")) == b"landed"


async def test_redirect_chain_beyond_limit(http, downloader) -> None:
    d = await downloader(max_redirects=3)
    err = await failure(d, url_of(http, "/hops/4"))
    assert isinstance(err, PoisonError) and err.reason == "too_many_redirects"


async def test_concurrency_limit_is_global(http, gate, downloader) -> None:
    d = await downloader(max_concurrent=2)
    tasks = [asyncio.create_task(fetch(d, url_of(http, "/held"))) for _ in range(6)]
    try:
        async with gate.cond:
            await asyncio.wait_for(gate.cond.wait_for(lambda: gate.in_flight == 2), WAIT)
            # Two are held; a third arriving now would break the limit.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(gate.cond.wait_for(lambda: gate.in_flight > 2), 0.5)
        gate.release.set()
        assert await asyncio.wait_for(asyncio.gather(*tasks), WAIT) == [b"ok"] * 6
    finally:
        gate.release.set()
        for task in tasks:
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT)
    assert gate.peak == 2


# -- network guard --------------------------------------------------------------------

async def serve_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(head({"Content-Length": 6, "Connection": "close"}) + b"served")
    await writer.drain()


GUARDED = dict(allow_private_networks=False, connect_timeout_s=1.0)

BLOCKED = [
    "http://127.0.0.1:{port}/",
    "http://localhost:{port}/",
    "http://2130706433:{port}/",
    "http://0x7f.0.0.1:{port}/",
    "http://0177.0.0.1:{port}/",
    "http://127.1:{port}/",
    "http://[::1]:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://0.0.0.0:{port}/",
]
# Addresses off this machine are judged without dialling anything, so a broken
# guard can never send a test's traffic to them.
NEVER_DIALLED = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]:8080/",
    "http://10.0.0.1:8080/",
    "http://192.168.1.1/",
    "http://172.16.0.1/",
    "http://[fd00::1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://224.0.0.1/",
]


@pytest.mark.parametrize("url", NEVER_DIALLED)
def test_off_machine_private_destinations_fail_the_url_check(url: str) -> None:
    with pytest.raises(PoisonError) as info:
        DestinationGuard(DownloadLimits()).check_url(URL(url))
    assert info.value.reason == "blocked_destination"


@pytest.mark.parametrize("template", BLOCKED)
async def test_private_destinations_are_never_dialled(raw, downloader, template: str) -> None:
    server = await raw(serve_ok, ipv6=True)
    d = await downloader(**GUARDED)
    err = await failure(d, template.format(port=server.port))
    assert isinstance(err, PoisonError) and err.reason == "blocked_destination"
    assert server.connections == 0


@pytest.mark.parametrize("allowed", ["127.0.0.1:{port}", "localhost:{port}"])
async def test_allowed_hosts_are_exempt(raw, downloader, allowed: str) -> None:
    server = await raw(serve_ok)
    entry = allowed.format(port=server.port)
    d = await downloader(**GUARDED, allowed_hosts=frozenset({entry}))
    host = entry.rsplit(":", 1)[0]
    assert await fetch(d, f"http://{host}:{server.port}/") == b"served"
    assert server.connections == 1


async def test_allowed_host_is_exact_about_the_port(raw, downloader) -> None:
    server = await raw(serve_ok)
    d = await downloader(**GUARDED, allowed_hosts=frozenset({f"127.0.0.1:{server.port + 1}"}))
    assert (await failure(d, server.url())).reason == "blocked_destination"
    assert server.connections == 0


@pytest.mark.parametrize("target", ["http://127.0.0.1:{port}/", "http://localhost:{port}/"])
async def test_redirect_to_a_blocked_host(http, raw, downloader, target: str) -> None:
    server = await raw(serve_ok, ipv6=True)
    d = await downloader(**GUARDED, allowed_hosts=frozenset({f"127.0.0.1:{http.port}"}))
    url = http.add("to", Route(status=302, headers={"Location": target.format(port=server.port)}))
    assert (await failure(d, url)).reason == "blocked_destination"
    assert server.connections == 0


@pytest.mark.parametrize("host", ["0x7f.0.0.1", "localhost"])
async def test_resolver_blocks_names_that_resolve_to_loopback(host: str) -> None:
    # Real getaddrinfo: it turns the hex spelling into 127.0.0.1 like any other name.
    resolver = GuardedResolver(DownloadLimits())
    try:
        with pytest.raises(PoisonError) as info:
            await asyncio.wait_for(resolver.resolve(host, 80), WAIT)
        assert info.value.reason == "blocked_destination"
    finally:
        await asyncio.wait_for(resolver.close(), WAIT)


class FixedDns(AbstractResolver):
    """An upstream resolver whose answers the test chooses (a rebinding attacker's DNS)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
                for a in self.addresses]

    async def close(self) -> None:
        pass


async def test_resolver_filters_private_answers() -> None:
    mixed = GuardedResolver(DownloadLimits(), FixedDns("10.0.0.7", "93.184.215.14", "::1"))
    found = await asyncio.wait_for(mixed.resolve("files.example", 443), WAIT)
    assert [r["host"] for r in found] == ["93.184.215.14"]
    rebound = GuardedResolver(DownloadLimits(), FixedDns("169.254.169.254", "::ffff:7f00:1"))
    with pytest.raises(PoisonError) as info:
        await asyncio.wait_for(rebound.resolve("files.example", 443), WAIT)
    assert info.value.reason == "blocked_destination"


# -- URLs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["http://user:secret@127.0.0.1:1/x", "ftp://127.0.0.1/x",
                                 "file:///etc/passwd", "http:///nohost", "not a url"])
async def test_unsupported_urls(downloader, url: str) -> None:
    err = await failure(await downloader(), url)
    assert isinstance(err, PoisonError) and err.reason == "unsupported_url"
    assert "secret" not in err.message


def test_redact_url_drops_secrets() -> None:
    url = "https://user:secret@files.example:8443/a/b.csv.gz?X-Amz-Signature=abc&t=1#frag"
    assert redact_url(url) == "https://files.example:8443/a/b.csv.gz"
    assert redact_url("http://files.example/x.csv") == "http://files.example/x.csv"
    # Messages format the redacted form lazily, from a str or a yarl URL alike.
    assert f"at {Redacted(url)}" == f"at {redact_url(url)}"
    assert str(Redacted(URL(url))) == redact_url(url)


async def test_error_messages_never_carry_the_query(http, downloader) -> None:
    d = await downloader()
    refused = f"http://127.0.0.1:{free_port()}/x"
    for url in (url_of(http, "/status/404"), url_of(http, "/status/503"), refused):
        err = await failure(d, url + "?sig=TOPSECRET")
        assert "TOPSECRET" not in str(err)
        assert redact_url(url) in err.message
        # aiohttp's own exception text holds the full URL: it must not ride along.
        assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


async def test_port_allowlist(raw, downloader) -> None:
    server = await raw(serve_ok)
    d = await downloader(allow_private_networks=True, allowed_ports=frozenset({server.port + 1}))
    assert (await failure(d, server.url())).reason == "blocked_destination"
    assert server.connections == 0
    d = await downloader(allow_private_networks=True, allowed_ports=frozenset({server.port}))
    assert await fetch(d, server.url()) == b"served"


# -- resumed downloads (app/files/resume.py) ----------------------------------------------

GZ = gzip.compress(DATA)
CHANGED = DATA.replace(b"ACME", b"EMCA")  # the same length, other bytes
FORMS = {"plain": (DATA, {}), "content-encoding": (GZ, {"Content-Encoding": "gzip"}),
         "gz-file": (GZ, {"Content-Type": "application/gzip"})}


@dataclass
class Resumes:
    """What a downloader told of its resumptions."""

    count: int = 0

    def __call__(self) -> None:
        self.count += 1


def ranged(server: FileServer, path: str, *versions: bytes, **how: Any) -> tuple[str, RangedFile]:
    served = RangedFile(list(versions) or [DATA], **how)
    return server.serve(path, served), served


def range_start(asked: str | None) -> int:
    assert asked is not None and asked.startswith("bytes=") and asked.endswith("-"), asked
    return int(asked[len("bytes="):-1])


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("form", sorted(FORMS))
async def test_a_cut_off_download_resumes_where_it_stopped(http, downloader, caplog, cut: str,
                                                           form: str) -> None:
    body, headers = FORMS[form]
    resumes = Resumes()
    d = await downloader(read_timeout_s=0.5, resumed=resumes)
    url, served = ranged(http, "cut", body, headers=headers, cut=cut)
    with caplog.at_level(logging.INFO, logger="app.files.fetch"):
        assert await fetch(d, url + "?sig=TOPSECRET") == DATA
    assert resumes.count == 1 and len(served.seen) == 2 and served.seen[0] == (None, None)
    asked, if_range = served.seen[1]
    assert if_range == served.headers_of(0)["ETag"]
    start = range_start(asked)
    # A reset may lose what the server had sent but the client had not read.
    assert start == len(body) // 2 if cut != "reset" else 0 <= start <= len(body) // 2
    logged = [r.__dict__ for r in caplog.records if getattr(r, "event", "") == "download_resumed"]
    assert [(line["url"], line["bytes_kept"]) for line in logged] == [(url, start)]
    assert "TOPSECRET" not in caplog.text


async def test_without_an_etag_if_range_names_last_modified(http, downloader) -> None:
    url, served = ranged(http, "dated", validator="last-modified")
    assert await fetch(await downloader(), url) == DATA
    assert served.seen[1] == (f"bytes={len(DATA) // 2}-", served.headers_of(0)["Last-Modified"])


@pytest.mark.parametrize("form", ["plain", "content-encoding"])
async def test_a_whole_file_in_answer_to_the_range_starts_over(http, downloader, form: str) -> None:
    body, headers = FORMS[form]
    resumes = Resumes()
    url, served = ranged(http, "ignored", body, headers=headers, ranges="ignored")
    assert await fetch(await downloader(resumed=resumes), url) == DATA  # nothing twice
    assert resumes.count == 1 and served.seen[1][0] == f"bytes={len(body) // 2}-"


async def test_a_file_changed_since_the_cut_starts_over_with_the_new_one(http, downloader) -> None:
    url, served = ranged(http, "changed", DATA, CHANGED)
    assert await fetch(await downloader(), url) == CHANGED
    assert served.seen[1][1] == served.headers_of(0)["ETag"] != served.headers_of(1)["ETag"]


async def test_a_part_of_a_changed_file_is_never_spliced_on(http, downloader) -> None:
    # The server honours Range but not If-Range: its 206 carries the new ETag.
    url, served = ranged(http, "spliced", DATA, CHANGED, ranges="no-if-range")
    err = await failure(await downloader(), url)
    assert isinstance(err, TransientError) and err.reason == "truncated_body"
    assert len(served.seen) == 2


@pytest.mark.parametrize(("how", "reason"), [
    (dict(ranges="none"), "truncated_body"),
    (dict(validator="none"), "truncated_body"),
    (dict(ranges="none", cut="stall"), "download_timeout"),
], ids=["no-ranges", "no-validator", "no-ranges-read-timeout"])
async def test_no_range_request_where_the_server_offered_none(http, downloader, how: dict,
                                                             reason: str) -> None:
    resumes = Resumes()
    url, served = ranged(http, "unranged", **how)
    err = await failure(await downloader(read_timeout_s=0.5, resumed=resumes), url)
    assert isinstance(err, TransientError) and err.reason == reason
    assert served.seen == [(None, None)] and resumes.count == 0


@pytest.mark.parametrize("cuts", [MAX_RESUMES, MAX_RESUMES + 1])
async def test_resumes_are_bounded_per_attempt(http, downloader, cuts: int) -> None:
    resumes = Resumes()
    url, served = ranged(http, "cuts", cut_first=cuts)
    d = await downloader(resumed=resumes)
    if cuts <= MAX_RESUMES:
        assert await fetch(d, url) == DATA
    else:
        assert (await failure(d, url)).reason == "truncated_body"
    assert resumes.count == MAX_RESUMES and len(served.seen) == MAX_RESUMES + 1
    starts = [range_start(asked) for asked, _ in served.seen[1:]]
    assert starts == sorted(starts) and starts[0] > 0  # each from where the last one stopped


async def test_the_decoded_size_limit_counts_every_part(http, downloader) -> None:
    url, served = ranged(http, "big", GZ, headers={"Content-Encoding": "gzip"})
    err = await failure(await downloader(max_file_bytes=len(DATA) * 3 // 4), url)
    assert isinstance(err, PoisonError) and err.reason == "file_too_large"
    assert len(served.seen) == 2


async def test_the_total_timeout_counts_every_part(http, downloader) -> None:
    # Each stalled part costs the read timeout: three of them outlast the total, which
    # ends the download before the request that would get the whole rest.
    url, served = ranged(http, "slow", cut="stall", cut_first=MAX_RESUMES)
    d = await downloader(read_timeout_s=0.5, total_timeout_s=1.2)
    assert (await failure(d, url)).reason == "download_timeout"
    assert 2 <= len(served.seen) <= MAX_RESUMES  # resumed, within the one deadline
