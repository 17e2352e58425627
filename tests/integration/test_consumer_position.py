"""What the commit rule past transaction markers (app/task/partition.py) relies on, pinned
against the real broker with the aiokafka version in use: a read_committed consumer's
``position`` moves past a commit marker and past an aborted transaction's records,
never past a data record it has not returned, and it moves past a marker even in a
``getmany`` that returns nothing for the partition. Figures: docs/design.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from tests.integration.harness import create_topics, unique, wait_until


async def transaction(producer: AIOKafkaProducer, topic: str, values: list[bytes],
                      abort: bool = False) -> None:
    await producer.begin_transaction()
    for value in values:
        await producer.send_and_wait(topic, value, partition=0)
    if abort:
        await producer.abort_transaction()
    else:
        await producer.commit_transaction()


@pytest.fixture
async def upstream(kafka_bootstrap) -> AsyncIterator[tuple[AIOKafkaProducer, TopicPartition]]:
    """A transactional producer over a new one-partition topic."""
    topics = await create_topics(kafka_bootstrap, partitions=1, name="position")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap,
                                transactional_id=unique("upstream"))
    await producer.start()
    try:
        yield producer, TopicPartition(topics.input, 0)
    finally:
        await producer.stop()


async def reader(bootstrap: str, tp: TopicPartition, **options) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                isolation_level="read_committed", enable_auto_commit=False,
                                **options)
    await consumer.start()
    consumer.assign([tp])
    consumer.seek(tp, 0)
    return consumer


async def read_until(consumer: AIOKafkaConsumer, tp: TopicPartition, count: int,
                     max_records: int | None = None) -> list[int]:
    """Offsets returned until ``count`` records came (one getmany may bring several)."""
    offsets: list[int] = []

    async def enough() -> bool:
        batch = await consumer.getmany(tp, timeout_ms=200, max_records=max_records)
        offsets.extend(r.offset for r in batch.get(tp, []))
        return len(offsets) >= count
    await wait_until(enough, 30, f"{count} records", every=0)
    return offsets


async def test_position_after_a_transaction_is_past_its_commit_marker(kafka_bootstrap, upstream):
    producer, tp = upstream
    await transaction(producer, tp.topic, [b"a", b"b", b"c", b"d", b"e"])  # offsets 0-4, marker 5
    consumer = await reader(kafka_bootstrap, tp)
    try:
        assert await read_until(consumer, tp, 5) == [0, 1, 2, 3, 4]
        assert await consumer.position(tp) == 6  # the marker came in the same fetch
    finally:
        await consumer.stop()


async def test_position_stops_at_the_last_returned_record_then_passes_the_marker(
        kafka_bootstrap, upstream):
    """getmany cut at the last data record: the marker is passed by the next getmany,
    which returns nothing for the partition."""
    producer, tp = upstream
    await transaction(producer, tp.topic, [b"a", b"b", b"c"])  # offsets 0-2, marker 3
    consumer = await reader(kafka_bootstrap, tp)
    try:
        assert await read_until(consumer, tp, 2, max_records=2) == [0, 1]
        assert await consumer.position(tp) == 2  # not past the record not yet returned
        assert await read_until(consumer, tp, 1, max_records=1) == [2]
        assert await consumer.position(tp) == 3
        assert (await consumer.getmany(tp, timeout_ms=0)).get(tp, []) == []
        assert await consumer.position(tp) == 4
    finally:
        await consumer.stop()


async def test_position_passes_a_marker_fetched_on_its_own(kafka_bootstrap, upstream):
    """A fetch of one batch (max_partition_fetch_bytes=1): the marker comes later."""
    producer, tp = upstream
    await transaction(producer, tp.topic, [b"a", b"b"])  # one batch 0-1, marker 2
    consumer = await reader(kafka_bootstrap, tp, max_partition_fetch_bytes=1)
    try:
        assert await read_until(consumer, tp, 2) == [0, 1]
        assert await consumer.position(tp) == 2

        async def past_marker() -> bool:
            assert (await consumer.getmany(tp, timeout_ms=200)).get(tp, []) == []
            return await consumer.position(tp) == 3
        await wait_until(past_marker, 30, "the position past the marker", every=0)
    finally:
        await consumer.stop()


async def test_position_passes_an_aborted_transaction_without_returning_it(
        kafka_bootstrap, upstream):
    producer, tp = upstream
    await transaction(producer, tp.topic, [b"a"])                        # 0, marker 1
    await transaction(producer, tp.topic, [b"x", b"y"], abort=True)      # 2-3, marker 4
    await transaction(producer, tp.topic, [b"b"])                        # 5, marker 6
    await transaction(producer, tp.topic, [b"z"], abort=True)            # 7, marker 8
    consumer = await reader(kafka_bootstrap, tp)
    try:
        assert await read_until(consumer, tp, 2) == [0, 5]
        assert await consumer.position(tp) == 9
        assert (await consumer.end_offsets([tp]))[tp] == 9
    finally:
        await consumer.stop()
