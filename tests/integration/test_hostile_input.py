"""A corpus of hostile input through the real service, broker and HTTP servers.

Each bad input record ends as exactly one dead letter with a stable reason; a
blocked destination is never connected to; good records around them still flow.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import orjson
import pytest

from tests.integration.harness import (
    Route,
    assert_exactly_once,
    create_topics,
    encode,
    lag,
    make_items,
    produce,
    read_all,
    service_env,
    wait_until,
)
from tools.fileserver import RawServer, drip, head, read_request


async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers by path with responses aiohttp would not send: lies and drips."""
    path = await read_request(reader)
    if path == b"/lie":  # promises 1000 bytes, sends 10, hangs up
        writer.write(head({"Content-Length": 1000}) + b'{"a": 1}\n')
    elif path == b"/drip":  # one byte a second, for longer than any timeout
        await drip(writer, promised=100_000, count=60)
    else:
        writer.write(head({"Content-Length": 9}) + b'{"a": 1}\n')
    await writer.drain()


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServer]:
    server = await RawServer(hostile).start()
    yield server
    await server.close()


@pytest.fixture
async def listener() -> AsyncIterator[RawServer]:
    """Where blocked URLs point: on 127.0.0.1 and ::1, counting every connection."""
    server = await RawServer(hostile).start(ipv6=True)
    yield server
    await server.close()


BOMB = gzip.compress(b"\0" * (64 * 1024 * 1024))


def corpus(files, raw: RawServer, trap: RawServer) -> list[tuple[bytes, str]]:
    """(input record, expected dead-letter reason)."""
    t = trap.port
    blocked = [f"http://127.0.0.1:{t}/", f"http://localhost:{t}/", f"http://2130706433:{t}/",
               f"http://0x7f.0.0.1:{t}/", f"http://0177.0.0.1:{t}/", f"http://127.1:{t}/",
               f"http://[::1]:{t}/", f"http://[::ffff:127.0.0.1]:{t}/", f"http://0.0.0.0:{t}/"]
    cases = [(url.encode(), "blocked_destination") for url in blocked]
    redirect = Route(b"", status=302, headers={"Location": f"http://127.0.0.1:{t}/x"})
    bodies = {
        "redirect": (redirect, "blocked_destination"),
        "bomb.gz": (Route(BOMB), "file_too_large"),
        "bomb-encoded": (Route(BOMB, headers={"Content-Encoding": "gzip"}), "file_too_large"),
        "oversized": (Route(b'{"a":1}\n' * 200_000), "file_too_large"),
        "deep": (Route(b'{"a":' * 100 + b"1" + b"}" * 100), "nesting_too_deep"),
        "nan": (Route(b'{"amount": NaN}\n'), "invalid_json"),
        "trailing": (Route(b'[{"a": 1}] trailing'), "invalid_json"),
        "utf8": (Route(b'{"memo": "\xff\xfe"}\n'), "invalid_utf8"),
        "not-objects": (Route(b'[{"a": 1}, 2, "three"]'), "not_an_object"),
    }
    cases += [(files.add(f"bad/{name}", route).encode(), reason)
              for name, (route, reason) in bodies.items()]
    cases += [(f"http://127.0.0.1:{raw.port}/lie".encode(), "truncated_body"),
              (f"http://127.0.0.1:{raw.port}/drip".encode(), "download_timeout")]
    cases += [(b"", "invalid_input_record"), (b"\xff\xfe\x00", "invalid_input_record"),
              (b"ftp://files.example/a.json", "invalid_input_record"),
              (b'{"href": "http://x/y"}', "invalid_input_record"),
              (b"[1, 2]", "invalid_input_record"),
              (f"http://user:pw@127.0.0.1:{files.port}/x".encode(), "unsupported_url")]
    return cases


async def test_hostile_corpus_dead_letters_each_once_and_dials_nothing_blocked(
        kafka_bootstrap, file_server, raw_server, listener, services):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="hostile")
    good = {file_server.add(f"good/{n}", Route(encode(make_items(f"good{n}", 3), "array")[0])):
            make_items(f"good{n}", 3) for n in range(3)}
    bad = corpus(file_server, raw_server, listener)
    urls = list(good)
    values = [urls[0].encode(), *[v for v, _ in bad[: len(bad) // 2]], urls[1].encode(),
              *[v for v, _ in bad[len(bad) // 2:]], urls[2].encode()]
    await produce(kafka_bootstrap, topics.input, values, 1)
    env = service_env(
        kafka_bootstrap, topics, DOWNLOAD_ALLOW_PRIVATE_NETWORKS="false",
        DOWNLOAD_ALLOWED_HOSTS=f"127.0.0.1:{file_server.port},127.0.0.1:{raw_server.port}",
        MAX_FILE_BYTES=str(1024 * 1024), MAX_ATTEMPTS="2", DOWNLOAD_READ_TIMEOUT_S="0.5",
        DOWNLOAD_TOTAL_TIMEOUT_S="5")
    service = services(env).start()

    async def done() -> bool:
        return await lag(kafka_bootstrap, topics) == 0
    await wait_until(done, 120, "every record committed")
    assert await service.stop() == 0

    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), good)
    letters = [orjson.loads(r.value) for r in await read_all(kafka_bootstrap, topics.dlq)]
    by_offset = {letter["source"]["offset"]: letter["reason"] for letter in letters}
    assert len(letters) == len(by_offset) == len(bad), "one dead letter per bad record"
    expected = {values.index(value): reason for value, reason in bad}
    assert by_offset == expected
    assert listener.connections == 0, "a blocked destination was connected to"
