"""Group commit (TRANSACTION_MAX_RECORDS > 1) on the real broker: a poison record in the
middle of a group takes none of its neighbours with it, and a kill inside a group's
open transaction leaves none of it visible.

To make a whole group ready at once, the head of the window is held by the file server
until the service has downloaded the files behind it (its /metrics counts downloads).
"""

from __future__ import annotations

import asyncio
import json
import re

from aiohttp import web
from aiokafka.structs import TopicPartition

from tests.integration.harness import (
    ChildProcess,
    FileServer,
    Route,
    Topics,
    assert_exactly_once,
    by_source,
    create_topics,
    encode,
    http_get,
    make_items,
    produce,
    read_all,
    service_env,
    wait_committed,
    wait_ready,
    wait_until,
)
from tools.kafka_io import end_offsets
from tools.local_kafka import free_port

GROUP = 8       # TRANSACTION_MAX_RECORDS
POISON = 3      # the input offset of the bad file, in the middle of the first group
DOWNLOADS = re.compile(r"^txingest_download_seconds_count (\S+)$", re.MULTILINE)


def held_head(server: FileServer, body: bytes) -> tuple[str, asyncio.Event]:
    """A URL answered only once the event is set: the head of the window."""
    release = asyncio.Event()

    async def answer(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(body=body)
    server.fallback = answer
    return server.url("held-head"), release


async def release_after_downloads(port: int, release: asyncio.Event, count: int) -> None:
    """Set ``release`` once the service has downloaded ``count`` files (a small file is
    parsed in the same step as its download is counted: it is then ready)."""
    await wait_ready(port)

    async def downloaded() -> bool:
        found = DOWNLOADS.search((await http_get(port, "/metrics"))[1])
        return found is not None and float(found.group(1)) >= count
    await wait_until(downloaded, 60, f"{count} downloads behind the held head")
    release.set()


async def start_with_group_ready(bootstrap: str, topics: Topics, server: FileServer,
                                 services, urls: list[str], release: asyncio.Event,
                                 **extra: str) -> ChildProcess:
    """Inputs all on partition 0, then the service, then the head let go once every
    other file of the first group is ready."""
    await produce(bootstrap, topics.input, [u.encode() for u in urls], 1)
    port = free_port()
    env = service_env(bootstrap, topics, HTTP_PORT=str(port),
                      TRANSACTION_MAX_RECORDS=str(GROUP), **extra)
    service = services(env).start()
    await release_after_downloads(port, release, min(len(urls), GROUP) - 1)
    return service


def small_files(server: FileServer, poison: bytes, name: str
                ) -> tuple[list[str], dict[str, list[bytes]], asyncio.Event]:
    """GROUP files of a few transactions each, the one at POISON answering ``poison``."""
    head_items = make_items(f"{name}0", 2)
    head, release = held_head(server, encode(head_items, "ndjson")[0])
    urls, expected = [head], {head: head_items}
    for n in range(1, GROUP):
        if n == POISON:
            urls.append(server.add(f"{name}/{n}", Route(poison)))
            continue
        items = make_items(f"{name}{n}", 1 + n % 3)
        urls.append(server.add(f"{name}/{n}", Route(encode(items, "ndjson")[0])))
        expected[urls[-1]] = items
    return urls, expected, release


async def the_one_dead_letter(bootstrap: str, topics: Topics) -> dict:
    dead = await read_all(bootstrap, topics.dlq)
    assert len(dead) == 1, [d.value for d in dead]
    return json.loads(dead[0].value)


async def test_an_unparseable_file_in_a_group_is_dead_lettered_alone(
        kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="group-parse")
    urls, expected, release = small_files(file_server, b'{"id":"bad", not json\n', "gp")
    service = await start_with_group_ready(kafka_bootstrap, topics, file_server, services,
                                           urls, release)
    await wait_committed(kafka_bootstrap, topics)
    assert await service.stop() == 0

    outputs = await read_all(kafka_bootstrap, topics.output)
    assert_exactly_once(outputs, expected)
    letter = await the_one_dead_letter(kafka_bootstrap, topics)
    assert letter["reason"] == "invalid_json" and letter["url"] == urls[POISON]
    assert letter["source"]["offset"] == POISON
    # One transaction: no commit marker between any two outputs (each takes an offset),
    # so the neighbours on both sides of the dead letter committed together.
    offsets = sorted(r.offset for r in outputs)
    assert offsets == list(range(len(offsets))), f"transaction boundaries in {offsets}"
    assert not service.events("aborted"), "a dead letter is not a failure of its group"


async def test_a_record_the_broker_refuses_fails_its_group_and_only_it_is_dead_lettered(
        kafka_bootstrap, file_server, services):
    # The broker refuses batches over 20,000 bytes on the output topic; the service's
    # own limit is higher, so the refusal happens inside the group's transaction.
    # Four output partitions, keyed by item: the other partitions' batches are written,
    # then aborted with the group.
    topics = await create_topics(kafka_bootstrap, partitions=4, name="group-large",
                                 output_config={"max.message.bytes": "20000"})
    huge = b'{"id":"huge","blob":"' + b"x" * 30_000 + b'"}'
    poison = b"\n".join([*make_items("gl-poison", 2), huge])
    urls, expected, release = small_files(file_server, poison, "gl")
    service = await start_with_group_ready(kafka_bootstrap, topics, file_server, services,
                                           urls, release, OUTPUT_KEY_FIELD="id")
    await wait_committed(kafka_bootstrap, topics)
    assert await service.stop() == 0

    committed = await read_all(kafka_bootstrap, topics.output)
    # Keyed by item over four partitions: a file's order holds only within a partition.
    assert_exactly_once(sorted(committed, key=_index), expected)
    letter = await the_one_dead_letter(kafka_bootstrap, topics)
    assert letter["reason"] == "record_too_large" and letter["source"]["offset"] == POISON
    # The group path ran: the group was aborted, then redone one record per transaction,
    # so the neighbours' records are in the log twice (aborted, then committed).
    groups = [e for e in service.events("aborted") if e["msg"].startswith(f"group of {GROUP}")]
    assert len(groups) == 1, service.events("aborted")
    written = by_source(await read_all(kafka_bootstrap, topics.output, "read_uncommitted"))
    neighbours = sum(len(written[url]) for url in expected)
    assert neighbours > len(committed), "the aborted group's neighbour records in the log"


def _index(record) -> int:
    return int(dict(record.headers)["index"])


# -- a kill inside a group's transaction ---------------------------------------------

# Two groups of 8 big files: each group sends over many polls of the output.
KILL_FILES, KILL_ITEMS = 16, 5000


async def kill_inside_open_group(bootstrap: str, topics: Topics,
                                 service: ChildProcess) -> list:
    """SIGKILL the service while a group's transaction is open; what it had written.

    Whenever the output shows an open transaction (its end beyond the last stable
    offset), the service is frozen (SIGSTOP) and the open records are read. One input
    partition means one producer, so they are all one transaction's. The service is
    killed once they come from two files or more (a group) and the newest is not its
    file's last (the group is still sending: its commit cannot be in flight); else it
    is let go (SIGCONT) and the output watched again."""
    killed: list = []

    async def killed_in_group() -> bool:
        written = await end_offsets(bootstrap, topics.output, "read_uncommitted")
        stable = await end_offsets(bootstrap, topics.output, "read_committed")
        if written == stable:
            return False
        service.pause()
        records = [r for r in await read_all(bootstrap, topics.output, "read_uncommitted")
                   if r.offset >= stable[TopicPartition(r.topic, r.partition)]]
        if len(by_source(records)) >= 2 and _mid_file(max(records, key=lambda r: r.offset)):
            service.kill()
            killed.extend(records)
            return True
        service.resume()
        return False
    await wait_until(killed_in_group, 120, "an open group transaction to kill", every=0.05)
    return killed


def _mid_file(record) -> bool:
    return _index(record) < int(dict(record.headers)["count"]) - 1


async def test_a_kill_inside_a_group_transaction_leaves_none_of_it_visible(
        kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="group-kill")
    head_items = make_items("gk0", KILL_ITEMS)
    head, release = held_head(file_server, encode(head_items, "ndjson")[0])
    urls, expected = [head], {head: head_items}
    for n in range(1, KILL_FILES):
        items = make_items(f"gk{n}", KILL_ITEMS)
        urls.append(file_server.add(f"gk/{n}", Route(encode(items, "ndjson")[0])))
        expected[urls[-1]] = items
    service = await start_with_group_ready(kafka_bootstrap, topics, file_server, services,
                                           urls, release,
                                           PREFETCH_PER_PARTITION=str(2 * GROUP))

    open_group = await kill_inside_open_group(kafka_bootstrap, topics, service)
    service.start()
    await wait_committed(kafka_bootstrap, topics, 180)
    assert await service.stop() == 0

    outputs = await read_all(kafka_bootstrap, topics.output)
    assert_exactly_once(outputs, expected)
    assert await read_all(kafka_bootstrap, topics.dlq) == []
    visible = {(r.partition, r.offset) for r in outputs}
    assert not visible & {(r.partition, r.offset) for r in open_group}, (
        "what the killed group had written stays aborted")
    assert service.starts == 2
