"""A local HTTP file server with fault injection, for tests, chaos, bench and the demo.

:class:`FileServer` is an aiohttp server on 127.0.0.1 that answers each path from a
:class:`Route` (body, status, headers, a delay, the first N requests failed), from a
handler served at that path (tools/ranges.py: byte ranges, cut off half-way), or,
for a path without either, from a handler the caller gives (the chaos workload computes
its files and faults per request). :func:`reset`, :func:`truncated` and
:func:`stall` are the faults such a handler can answer with.

:class:`RawServer` runs a handler on each TCP connection and counts connections: for
answers no HTTP library sends (a lying Content-Length, a drip feed) and to prove
that nothing dialled an address. :func:`head`, :func:`read_request`,
:func:`wait_for_hangup` and :func:`drip` help write those handlers.
:func:`answer_routes` is a RawServer handler that answers from Routes, for the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web

WAIT_S = 20.0  # ceiling on starting, stopping and reading a request

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    fail_first: int = 0           # answer the first N requests with fail_status
    fail_status: int = 503
    delay: float = 0.0            # seconds before every answer (a slow server)
    requests: int = 0             # how many it got

    def answer(self) -> tuple[int, Mapping[str, str], bytes]:
        """Status, headers and body for the request just counted (the failure for the
        first ``fail_first``)."""
        if self.requests <= self.fail_first:
            return self.fail_status, {"Content-Type": "text/plain; charset=utf-8"}, \
                b"injected failure"
        return self.status, self.headers, self.body


@dataclass
class Generated:
    """A body made piece by piece as it is sent, never whole in memory: files bigger than
    a test should hold (``pieces()`` starts it afresh for every request)."""

    pieces: Callable[[], Iterator[bytes]]
    headers: dict[str, str] = field(default_factory=dict)
    requests: int = 0


class FileServer:
    """Routes by path (no leading slash); ``fallback`` answers the paths without one."""

    def __init__(self, fallback: Handler | None = None, backlog: int = 1024) -> None:
        self.routes: dict[str, Route] = {}
        self.handlers: dict[str, Handler] = {}
        self.fallback = fallback
        self.backlog = backlog
        self.port = 0
        self.inflight = 0       # route requests being answered right now
        self.max_inflight = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> FileServer:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=self.backlog)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def add(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.url(path)

    def serve(self, path: str, handler: Handler) -> str:
        """Answer ``path`` with ``handler``, for what a Route cannot say."""
        self.handlers[path] = handler
        return self.url(path)

    def add_generated(self, path: str, body: Generated) -> str:
        """Answer ``path`` with a body made as it is sent, never held whole."""
        return self.serve(path, functools.partial(_send_generated, body=body))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        if path in self.handlers:
            return await self.handlers[path](request)
        route = self.routes.get(path)
        if route is None:
            if self.fallback is not None:
                return await self.fallback(request)
            return web.Response(status=404)
        route.requests += 1
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if route.delay:
                await asyncio.sleep(route.delay)
        finally:
            self.inflight -= 1
        status, headers, body = route.answer()
        return web.Response(status=status, body=body, headers=headers)


async def _send_generated(request: web.Request, body: Generated) -> web.StreamResponse:
    """Chunked, one piece at a time; a client that hangs up ends it quietly."""
    body.requests += 1
    response = web.StreamResponse(headers=body.headers)
    try:
        await response.prepare(request)
        for piece in body.pieces():
            await response.write(piece)
        await response.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass
    return response


# -- faults a handler can answer with ------------------------------------------------------

def reset(request: web.Request) -> web.StreamResponse:
    """Hang up with a TCP RST instead of an answer."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:  # RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response(status=503)  # never reaches the client


async def truncated(request: web.Request, body: bytes, headers: Mapping[str, str],
                    promised: int) -> web.StreamResponse:
    """Promise ``promised`` bytes, send the first half of ``body``, hang up."""
    response = web.StreamResponse(headers=dict(headers))
    response.content_length = promised
    try:
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
    except ConnectionResetError:  # the client is gone already
        return web.Response(status=503)  # aiohttp drops it quietly
    if request.transport is not None:
        request.transport.close()
    return response


async def stall(seconds: float) -> web.StreamResponse:
    """Answer 503 only after ``seconds`` (past a client's read timeout)."""
    await asyncio.sleep(seconds)
    return web.Response(status=503, text="too late")


# -- raw TCP -------------------------------------------------------------------------------

class RawServer:
    """A TCP server on 127.0.0.1 (and ::1 on the same port, if asked and the host has
    it) that counts accepted connections and runs ``handler`` on each."""

    def __init__(self, handler: RawHandler) -> None:
        self.handler = handler
        self.connections = 0
        self.port = 0
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, ipv6: bool = False) -> RawServer:
        server = await asyncio.wait_for(asyncio.start_server(self._serve, "127.0.0.1", 0),
                                        WAIT_S)
        self.port = server.sockets[0].getsockname()[1]
        self._servers.append(server)
        if ipv6 and socket.has_ipv6:  # same port on ::1, so a dial there is counted too
            with contextlib.suppress(OSError):
                v6 = asyncio.start_server(self._serve, "::1", self.port)
                self._servers.append(await asyncio.wait_for(v6, WAIT_S))
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client hung up, or never sent a request
        finally:
            self._tasks.discard(task)
            writer.close()

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), WAIT_S)
        for server in self._servers:
            await asyncio.wait_for(server.wait_closed(), WAIT_S)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "") -> str:
        return f"{self.base_url}/{path}"


def head(headers: Mapping[str, str | int], status: str = "200 OK") -> bytes:
    """An HTTP/1.1 response head, as written."""
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """The request's path, once its head has arrived."""
    request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
    return request.split(b" ", 2)[1]


async def wait_for_hangup(reader: asyncio.StreamReader) -> bool:
    """True once the client closed the connection (it read nothing more from us)."""
    return await asyncio.wait_for(reader.read(), WAIT_S) == b""


async def drip(writer: asyncio.StreamWriter, promised: int, count: int, byte: bytes = b" ",
               every: float = 1.0) -> None:
    """Promise ``promised`` bytes, then send one ``byte`` every ``every`` s, ``count`` times."""
    writer.write(head({"Content-Length": promised}))
    for _ in range(count):
        writer.write(byte)
        await writer.drain()
        await asyncio.sleep(every)  # the drip itself, server side


def answer_routes(routes: Mapping[str, Route]) -> RawHandler:
    """Answer GETs from ``routes`` (keyed like FileServer's: the path without its leading
    slash or query) over kept-alive connections, 404 for any other path. The benchmark
    serves its files with this: aiohttp's server spends several times its CPU per request,
    on the same cores as the service it measures."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the client closed its kept-alive connection
            target = request.split(b" ", 2)[1].decode("latin-1")
            path = target.partition("?")[0].removeprefix("/")
            writer.write(await _route_answer(routes.get(path)))
            await writer.drain()
            if b"\r\nconnection: close" in request.lower():
                return

    return handler


async def _route_answer(route: Route | None) -> bytes:
    """The whole response to a GET of ``route``, after its delay (a 404 without one)."""
    if route is None:
        return head({"Content-Length": 0}, "404 Not Found")
    route.requests += 1
    if route.delay:
        await asyncio.sleep(route.delay)
    status, headers, body = route.answer()
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return head({**headers, "Content-Length": len(body)}, f"{status} {reason}") + body
