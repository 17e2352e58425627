"""Input written in transactions (``txingest redrive``, a transactional upstream): the
group's committed offset reaches the partition's end, past the commit markers and an
aborted transaction's records, and ``txingest_consumer_lag`` reads 0 (app/task/partition.py,
rules (a) and (b)); the outputs stay exactly once and the aborted inputs are not read.
"""

from __future__ import annotations

import re

import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.harness import (
    Route,
    Topics,
    assert_exactly_once,
    create_topics,
    encode,
    http_get,
    lag,
    make_items,
    read_all,
    service_env,
    unique,
    wait_until,
)
from tools.local_kafka import free_port

LAG = re.compile(r'^txingest_consumer_lag\{partition="0"\} (\S+)$', re.MULTILINE)


async def transaction(producer: AIOKafkaProducer, topic: str, urls: list[str],
                      abort: bool = False) -> None:
    await producer.begin_transaction()
    for url in urls:
        await producer.send_and_wait(topic, url.encode(), key=url.encode(), partition=0)
    if abort:
        await producer.abort_transaction()
    else:
        await producer.commit_transaction()


async def wait_caught_up(bootstrap: str, topics: Topics, port: int, what: str) -> None:
    """Until the group's committed offset is the partition's end and /metrics says lag 0."""
    async def caught_up() -> bool:
        if await lag(bootstrap, topics) != 0:
            return False
        found = LAG.search((await http_get(port, "/metrics"))[1])
        return found is not None and float(found.group(1)) == 0
    await wait_until(caught_up, 60, what)


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
async def test_the_committed_offset_passes_markers_and_aborted_input(
        kafka_bootstrap, file_server, services, guarantee):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="txinput")
    expected = {}
    for n in range(4):
        items = make_items(f"tx{n}", 2 + n)
        expected[file_server.add(f"tx/{n}", Route(encode(items, "ndjson")[0]))] = items
    urls = list(expected)
    aborted = [file_server.add(f"aborted/{n}", Route(encode(make_items(f"ab{n}", 1),
                                                            "ndjson")[0])) for n in range(2)]
    upstream = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap,
                                transactional_id=unique("upstream"))
    await upstream.start()
    try:
        await transaction(upstream, topics.input, urls[:3])                # 0-2, marker 3
        await transaction(upstream, topics.input, aborted[:1], abort=True)  # 4, marker 5
        await transaction(upstream, topics.input, urls[3:])                # 6, marker 7
        port = free_port()
        service = services(service_env(kafka_bootstrap, topics, HTTP_PORT=str(port),
                                       PROCESSING_GUARANTEE=guarantee)).start()
        await wait_caught_up(kafka_bootstrap, topics, port, "the end offset 8 committed")
        # Idle, then only an aborted transaction: no record is returned, the position moves.
        await transaction(upstream, topics.input, aborted[1:], abort=True)  # 8, marker 9
        await wait_caught_up(kafka_bootstrap, topics, port, "the end offset 10 committed")
    finally:
        await upstream.stop()
    assert service.events("position_committed"), "the idle catch-up committed alone"
    assert await service.stop() == 0
    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), expected)
    assert await read_all(kafka_bootstrap, topics.dlq) == []
