"""When the topics change under the service, on the real broker: input partitions added
(DEDUP's changelog grows with them, at start and while the service runs), the input's log
going back under the consumer (processed again, never dropped), and a dedup restore whose
changelog's log start moves (read on from the new start, never from the end)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic, RecordsToDelete
from aiokafka.structs import TopicPartition

from app.config import load_settings
from app.dedup.store import Deduplicator, DedupStore, content_key, entry_value
from app.kafka.clients import make_restore_consumer
from tests.integration.harness import (
    Topics,
    assert_exactly_once,
    create_topics,
    produce,
    read_all,
    wait_committed,
    wait_until,
)
from tests.integration.test_dedup import dedup_env, serve
from tools.kafka_io import unique


@contextlib.asynccontextmanager
async def admin_client(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def partition_count(bootstrap: str, topic: str) -> int:
    async with admin_client(bootstrap) as admin:
        (described,) = await admin.describe_topics([topic])
        return len(described["partitions"])


async def add_input_partitions(bootstrap: str, topics: Topics, total: int) -> None:
    """What a user does to scale out: the input topic grows; the service is not told."""
    async with admin_client(bootstrap) as admin:
        await admin.create_partitions({topics.input: NewPartitions(total)})
    topics.partitions = total


def files(file_server, *names: str) -> tuple[list[str], dict[str, list[bytes]]]:
    served = [serve(file_server, name, 2) for name in names]
    return [url for url, _ in served], {url: items for url, items in served}


def duplicates(service) -> list[tuple[int, int]]:
    """(partition, original offset) of each repeat the service logged."""
    return sorted((e["partition"], e["original_offset"]) for e in service.events("duplicate"))


async def test_input_partitions_added_while_stopped_grow_the_changelog_at_start(
        kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="grown")
    (a, b, c, d, e), expected = files(file_server, "ga", "gb", "gc", "gd", "ge")
    env = dedup_env(kafka_bootstrap, topics)
    await produce(kafka_bootstrap, topics.input, [a.encode()], 1)
    first = services(env).start()
    await wait_committed(kafka_bootstrap, topics)
    assert await first.stop() == 0

    await add_input_partitions(kafka_bootstrap, topics, 3)
    # Round robin: partition 0 gets a (a repeat) and d, 1 gets c and e, 2 gets b twice.
    await produce(kafka_bootstrap, topics.input, [v.encode() for v in (a, c, b, d, e, b)], 3)
    second = services(env, name="pod-1").start()
    await wait_committed(kafka_bootstrap, topics, timeout=60)
    assert await second.stop() == 0
    assert await partition_count(kafka_bootstrap, env["DEDUP_TOPIC"]) == 3
    assert [event["msg"].split(":")[1].split()[0] for event in
            second.events("changelog_ready")] == ["grew"], second.events("changelog_ready")
    assert duplicates(second) == [(0, 0), (2, 0)]
    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), expected)


async def test_input_partitions_added_while_running_are_taken_with_their_changelog(
        kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="growing")
    (a, b, c), expected = files(file_server, "ra", "rb", "rc")
    env = dedup_env(kafka_bootstrap, topics, KAFKA_METADATA_MAX_AGE_MS="1000")
    await produce(kafka_bootstrap, topics.input, [a.encode()], 1)
    service = services(env).start()
    await wait_committed(kafka_bootstrap, topics)

    await add_input_partitions(kafka_bootstrap, topics, 2)
    # Round robin: partition 0 gets c, partition 1 gets b twice.
    await produce(kafka_bootstrap, topics.input, [v.encode() for v in (c, b, c, b)], 2)
    await wait_committed(kafka_bootstrap, topics, timeout=60)
    assert await service.stop() == 0
    assert service.starts == 1, "the same process took the new partition"
    assert [event["msg"].split(":")[1].split()[0] for event in
            service.events("changelog_ready")] == ["created", "grew"]
    assert await partition_count(kafka_bootstrap, env["DEDUP_TOPIC"]) == 2
    assert duplicates(service) == [(0, 1), (1, 0)]
    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), expected)


async def test_a_committed_offset_past_the_log_end_is_processed_from_the_log_start(
        kafka_bootstrap, file_server, services):
    """As after an unclean leader election truncated the log below the group's committed
    offset: the consumer's position is out of range and goes back to the log start."""
    topics = await create_topics(kafka_bootstrap, partitions=1, name="rewound")
    urls, expected = files(file_server, "wa", "wb", "wc")
    await produce(kafka_bootstrap, topics.input, [url.encode() for url in urls], 1)
    tp = TopicPartition(topics.input, 0)
    group = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=topics.group,
                             enable_auto_commit=False)
    await group.start()
    try:
        group.assign([tp])
        await group.commit({tp: 10})
    finally:
        await group.stop()
    service = services(dedup_env(kafka_bootstrap, topics)).start()
    await wait_committed(kafka_bootstrap, topics, timeout=60)
    assert await service.stop() == 0
    (rewound,) = service.events("input_rewound")
    assert (rewound["expected"], rewound["offset"]) == (10, 0)
    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), expected)


async def test_an_input_topic_deleted_and_recreated_under_the_service_is_processed(
        kafka_bootstrap, file_server, services):
    """The consumer sees the topic go (its partition revoked) and come back at its next
    metadata refresh; Kafka dropped the group's offsets with the old topic, so the new
    one is read from its start. (A consumer that does not notice finds its position out
    of range: the path of the test above.)"""
    topics = await create_topics(kafka_bootstrap, partitions=1, name="recreated")
    (a, b, c, d), expected = files(file_server, "xa", "xb", "xc", "xd")
    await produce(kafka_bootstrap, topics.input, [a.encode(), b.encode(), c.encode()], 1)
    env = dedup_env(kafka_bootstrap, topics, KAFKA_METADATA_MAX_AGE_MS="1000")
    service = services(env).start()
    await wait_committed(kafka_bootstrap, topics)
    async with admin_client(kafka_bootstrap) as admin:
        await admin.delete_topics([topics.input])

        async def gone() -> bool:
            return topics.input not in await admin.list_topics()
        await wait_until(gone, 30, "the input topic deleted")
        await admin.create_topics([NewTopic(topics.input, 1, 1)])
    await produce(kafka_bootstrap, topics.input, [d.encode()], 1)

    async def all_written() -> bool:
        outputs = await read_all(kafka_bootstrap, topics.output)
        return len(outputs) >= sum(map(len, expected.values()))
    await wait_until(all_written, 90, "the recreated topic's record written")
    assert await service.stop() == 0
    assert_exactly_once(await read_all(kafka_bootstrap, topics.output), expected)


async def test_a_restore_whose_log_start_moves_reads_on_from_the_new_start(kafka_bootstrap):
    """The log start moves by DeleteRecords here, as retention moves it under
    cleanup.policy=compact,delete: the restore's position falls out of range."""
    topic = unique("dedup-moving")
    async with admin_client(kafka_bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={
            "cleanup.policy": "compact,delete"})])
    tp, keys = TopicPartition(topic, 0), [content_key(b"%d" % i) for i in range(10)]
    await produce(kafka_bootstrap, topic, [entry_value(i, time.time()) for i in range(10)], 1,
                  keys=keys)
    consumer = make_restore_consumer(load_settings([], {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "POD_NAME": "restore-test"}))
    seek_to_beginning = consumer.seek_to_beginning

    async def seek_then_move_the_log_start(*partitions: TopicPartition) -> None:
        consumer.pause(*partitions)  # nothing fetched from the old start
        await seek_to_beginning(*partitions)
        async with admin_client(kafka_bootstrap) as admin:
            await admin.delete_records({tp: RecordsToDelete(4)})
        consumer.resume(*partitions)
    consumer.seek_to_beginning = seek_then_move_the_log_start  # type: ignore[method-assign]
    dedup = Deduplicator("url", DedupStore(100, 86_400.0), tp)
    await consumer.start()
    try:
        entries = await asyncio.wait_for(dedup.restore(consumer), 60)
    finally:
        await consumer.stop()
    assert entries == 6
    assert [dedup.store.first_offset(key) for key in keys] == [None] * 4 + list(range(4, 10))
