"""The benchmark's lean file server (``answer_routes`` on a RawServer), on local sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tools.fileserver import WAIT_S, RawServer, Route, answer_routes


@pytest.fixture
async def routes() -> AsyncIterator[tuple[RawServer, dict[str, Route]]]:
    table = {
        "f/1": Route(b"one\n", headers={"Content-Type": "application/x-ndjson"}),
        "f/2": Route(b"x" * 3_000_000),  # more than a socket buffer holds
        "flaky": Route(b"ok", fail_first=1, fail_status=503),
    }
    server = await RawServer(answer_routes(table)).start()
    try:
        yield server, table
    finally:
        await server.close()


async def test_answers_routes_and_404s_over_one_kept_alive_connection(
        routes: tuple[RawServer, dict[str, Route]]) -> None:
    server, table = routes
    answers = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for path in ("f/1", "f/2?sig=abc", "f/1", "missing"):
            async with session.get(server.url(path)) as resp:
                answers.append((resp.status, resp.content_type, await resp.read()))
    assert answers == [
        (200, "application/x-ndjson", b"one\n"),
        (200, "application/octet-stream", b"x" * 3_000_000),
        (200, "application/x-ndjson", b"one\n"),
        (404, "application/octet-stream", b""),
    ]
    assert (table["f/1"].requests, table["f/2"].requests) == (2, 1)
    assert server.connections == 1


async def test_fails_the_first_requests_as_the_route_says(
        routes: tuple[RawServer, dict[str, Route]]) -> None:
    server, _ = routes
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(2):
            async with session.get(server.url("flaky")) as resp:
                statuses.append((resp.status, await resp.read()))
    assert statuses == [(503, b"injected failure"), (200, b"ok")]


async def test_a_request_that_asks_to_close_gets_its_answer_then_eof(
        routes: tuple[RawServer, dict[str, Route]]) -> None:
    server, _ = routes
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /f/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), WAIT_S)  # returns only at EOF
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\none\n")
