"""KIP-447 through the protocol layer, on the real broker (run it with KAFKA_VERSION
unset for 4.4.0, and with KAFKA_VERSION=3.9.1), under each transaction protocol the
broker offers (transactions v2 on 4.4.0 only).

A zombie's transactional offset commit carries a membership the group coordinator no
longer knows: a stale generation, a member that left, a static instance id another
consumer took. It is refused with the matching error, its transaction can only abort,
and its outputs never become visible to read_committed; the same producer then commits
with the current membership. ``require_stable`` keeps a new owner's offset fetch
waiting while a transaction holds pending offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka import errors as kafka
from aiokafka.client import CoordinationType
from aiokafka.structs import TopicPartition

from app.kafka.protocol.errors import FencedInstanceIdError, UnstableOffsetCommitError
from app.kafka.protocol.group_commit import consumer_group_metadata
from app.kafka.protocol.offset_messages import GroupMetadata, OffsetFetchRequest
from app.kafka.protocol.producer import TransactionalProducer
from app.kafka.protocol.stable_offsets import fetch_stable_offsets
from tests.integration.harness import (
    Topics,
    create_topics,
    read_all,
    unique,
    wait_until,
)
from tools.kafka_io import offered_protocol


@contextlib.asynccontextmanager
async def member(bootstrap: str, topics: Topics, instance: str | None = None,
                 **options: Any) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer in the topics' group, once it holds a generation."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=topics.group, group_instance_id=instance,
        enable_auto_commit=False, session_timeout_ms=10_000, heartbeat_interval_ms=100,
        **options)
    await consumer.start()
    try:
        consumer.subscribe([topics.input])
        await wait_joined(consumer)
        yield consumer
    finally:
        await consumer.stop()


async def wait_joined(consumer: AIOKafkaConsumer, after_generation: int = 0) -> None:
    async def joined() -> bool:
        meta = consumer_group_metadata(consumer)
        return meta.generation_id > after_generation and bool(meta.member_id)
    await wait_until(joined, 60, "the consumer to join the group", every=0.05)


class Membership:
    """What the test's producer believes its membership is."""

    def __init__(self, group: GroupMetadata) -> None:
        self.group = group

    def __call__(self) -> GroupMetadata:
        return self.group


@pytest.fixture(params=["v1", "v2"])
async def protocol(request, kafka_bootstrap) -> str:
    """Each transaction protocol the broker offers (v2: transactions v2)."""
    if request.param == "v2" and await offered_protocol(kafka_bootstrap) != "v2":
        pytest.skip("this broker does not offer transactions v2")
    return str(request.param)


@contextlib.asynccontextmanager
async def producer(bootstrap: str, membership: Membership, protocol: str = "v1", **options: Any
                   ) -> AsyncIterator[TransactionalProducer]:
    made = TransactionalProducer(
        group_metadata=membership, bootstrap_servers=bootstrap,
        transactions_v2=protocol == "v2",
        **{"transactional_id": unique("kip447-txn"), "retry_backoff_ms": 20, **options})
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


async def transaction(made: TransactionalProducer, topics: Topics, offset: int,
                      value: bytes) -> None:
    """Outputs and the input offset in one transaction; on error, abort and re-raise."""
    offsets = {TopicPartition(topics.input, 0): offset}
    await made.begin_transaction()
    try:
        if made.transactions_v2:  # the offsets first (txn_v2.py)
            await made.send_offsets_to_transaction(offsets, topics.group)
        await made.send_and_wait(topics.output, value, partition=0)
        if not made.transactions_v2:
            await made.send_offsets_to_transaction(offsets, topics.group)
    except Exception:
        await made.abort_transaction()
        raise
    await made.commit_transaction()


async def stale_generation(bootstrap: str, topics: Topics, stack: contextlib.AsyncExitStack
                           ) -> tuple[GroupMetadata, GroupMetadata]:
    """A member's membership before another consumer joined the group."""
    first = await stack.enter_async_context(member(bootstrap, topics))
    zombie = consumer_group_metadata(first)
    await stack.enter_async_context(member(bootstrap, topics))
    await wait_joined(first, after_generation=zombie.generation_id)
    return zombie, consumer_group_metadata(first)


async def member_that_left(bootstrap: str, topics: Topics, stack: contextlib.AsyncExitStack
                           ) -> tuple[GroupMetadata, GroupMetadata]:
    current = await stack.enter_async_context(member(bootstrap, topics))
    async with member(bootstrap, topics) as gone:
        zombie = consumer_group_metadata(gone)
    await wait_joined(current, after_generation=zombie.generation_id)  # the group rebalanced
    return zombie, consumer_group_metadata(current)


async def instance_taken_over(bootstrap: str, topics: Topics, stack: contextlib.AsyncExitStack
                              ) -> tuple[GroupMetadata, GroupMetadata]:
    """A static member stopped without leaving, and its pod came back as a new member."""
    async with member(bootstrap, topics, instance="pod-a") as old:
        zombie = consumer_group_metadata(old)
    new = await stack.enter_async_context(member(bootstrap, topics, instance="pod-a"))
    return zombie, consumer_group_metadata(new)


@pytest.mark.parametrize("zombie_of, refused_with", [
    (stale_generation, kafka.IllegalGenerationError),     # 22
    (member_that_left, kafka.UnknownMemberIdError),       # 25
    (instance_taken_over, FencedInstanceIdError),         # 82
], ids=["stale-generation", "unknown-member", "fenced-instance-id"])
async def test_a_zombie_s_offsets_are_refused_and_its_outputs_never_seen(
        kafka_bootstrap, zombie_of, refused_with, protocol):
    topics = await create_topics(kafka_bootstrap, 1, name="kip447")
    async with contextlib.AsyncExitStack() as stack:
        zombie, current = await zombie_of(kafka_bootstrap, topics, stack)
        membership = Membership(zombie)
        made = await stack.enter_async_context(producer(kafka_bootstrap, membership, protocol))
        with pytest.raises(refused_with):
            await transaction(made, topics, 5, b"from the zombie")
        membership.group = current  # the same producer: its sender lives on
        await transaction(made, topics, 7, b"from the owner")
        offsets = await fetch_stable_offsets(
            made.client, topics.group, [TopicPartition(topics.input, 0)], timeout_s=30)
    assert offsets == {TopicPartition(topics.input, 0): 7}
    assert [r.value for r in await read_all(kafka_bootstrap, topics.output)] == [
        b"from the owner"]
    if protocol == "v1":  # under v2 the refused offsets come first: nothing is written
        written = await read_all(kafka_bootstrap, topics.output, isolation="read_uncommitted")
        assert b"from the zombie" in [r.value for r in written]  # written, then aborted


async def test_no_offsets_are_sent_without_a_generation(kafka_bootstrap, protocol):
    """Generation -1 and no member id: the broker would check nothing, so the layer
    refuses to send them (an evicted consumer's aiokafka resets to exactly that)."""
    topics = await create_topics(kafka_bootstrap, 1, name="kip447")
    membership = Membership(GroupMetadata(topics.group, -1, "", None))
    async with producer(kafka_bootstrap, membership, protocol) as made:
        with pytest.raises(kafka.KafkaError, match="no generation"):
            await transaction(made, topics, 3, b"unchecked")
    assert await read_all(kafka_bootstrap, topics.output) == []


async def test_require_stable_waits_until_the_pending_offsets_settle(kafka_bootstrap):
    topics = await create_topics(kafka_bootstrap, 1, name="kip447")
    tp = TopicPartition(topics.input, 0)
    async with member(kafka_bootstrap, topics) as owner, \
            producer(kafka_bootstrap, Membership(consumer_group_metadata(owner))) as made:
        client = made.client
        assert await fetch_stable_offsets(client, topics.group, [tp], timeout_s=30) == {tp: None}
        await made.begin_transaction()
        await made.send_and_wait(topics.output, b"pending", partition=0)
        await made.send_offsets_to_transaction({tp: 11}, topics.group)
        assert await raw_error(client, topics.group, tp) == UnstableOffsetCommitError.errno
        with pytest.raises(UnstableOffsetCommitError):
            await fetch_stable_offsets(client, topics.group, [tp], timeout_s=0.2)
        unstable: list[list[TopicPartition]] = []
        waiting = asyncio.ensure_future(fetch_stable_offsets(
            client, topics.group, [tp], timeout_s=60, on_unstable=unstable.append))

        async def retried() -> bool:
            return len(unstable) >= 3
        await wait_until(retried, 30, "the fetch to meet UNSTABLE_OFFSET_COMMIT thrice",
                         every=0.05)
        assert not waiting.done()
        await made.commit_transaction()
        assert await asyncio.wait_for(waiting, 30) == {tp: 11}


async def raw_error(client, group: str, tp: TopicPartition) -> int:
    """The partition's error code in one OffsetFetch v7 with require_stable."""
    node = await client.coordinator_lookup(CoordinationType.GROUP, group)
    response = await client.send(node, OffsetFetchRequest(group, [tp]))
    [(_, [(_, _, _, _, error_code, _)], _)] = response.topics
    return int(error_code)
