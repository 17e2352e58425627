"""A departed replica's open transaction is fenced, a live member's never, on the real
broker (run it with KAFKA_VERSION unset for 4.4.0, and with KAFKA_VERSION=3.9.1).

With per-pod transactional ids a new owner does not initialise the previous owner's
id; a transaction that owner left open, the partition's offsets in it, would hold the
new owner's start offset (require_stable) until the transaction timeout, 120 s here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka.structs import TopicPartition

from app.config import Settings, load_settings
from app.kafka.protocol.group_commit import consumer_group_metadata
from app.kafka.protocol.offset_messages import GroupMetadata
from app.kafka.protocol.producer import TransactionalProducer
from app.kafka.protocol.stable_offsets import fetch_stable_offsets
from app.kafka.protocol.zombies import ongoing_transactions
from app.ops.stats import Stats
from app.task.context import TaskContext
from app.task.fencing import fence_zombies
from app.task.position import start_offset
from tests.integration.harness import (
    Topics,
    create_topics,
    left_open,
    read_all,
    service_env,
    wait_until,
)
from tests.integration.test_kip447 import Membership, member, producer
from tools.kafka_io import end_offsets

TRANSACTION_TIMEOUT_MS = 120_000  # the service's default: fencing must not wait it out
SETTLED_WITHIN_S = 15


def settings_of(bootstrap: str, topics: Topics, pod: str) -> Settings:
    return load_settings([], service_env(bootstrap, topics, POD_NAME=pod))


async def open_transaction(made: TransactionalProducer, topics: Topics, offset: int,
                           value: bytes) -> None:
    """An output and the input offset sent in a transaction left open."""
    await made.begin_transaction()
    await made.send_and_wait(topics.output, value, partition=0)
    await made.send_offsets_to_transaction({TopicPartition(topics.input, 0): offset},
                                           topics.group)


async def abandon(bootstrap: str, topics: Topics, pod: str, group: GroupMetadata) -> None:
    """A replica's producer (per-pod id) commits offset 3, then leaves a transaction
    with offset 5 open: stopped, never committed nor aborted."""
    async with producer(bootstrap, Membership(group), transactional_id=f"{topics.group}-{pod}-0",
                        transaction_timeout_ms=TRANSACTION_TIMEOUT_MS) as made:
        await open_transaction(made, topics, 3, b"before")
        await made.commit_transaction()
        await open_transaction(made, topics, 5, b"from the zombie")


async def test_a_departed_replica_s_transaction_is_fenced_and_the_offset_settles(
        kafka_bootstrap, caplog):
    topics = await create_topics(kafka_bootstrap, 1, name="fence")
    tp = TopicPartition(topics.input, 0)
    async with member(kafka_bootstrap, topics, client_id="txingest-zombie") as zombie:
        await abandon(kafka_bootstrap, topics, "zombie", consumer_group_metadata(zombie))
    # The zombie's consumer left the group; its transaction is still open.
    async with member(kafka_bootstrap, topics, client_id="txingest-owner") as owner:
        stats = Stats()
        context = TaskContext(settings_of(kafka_bootstrap, topics, "owner"), owner,
                              None, stats, None, None,  # type: ignore[arg-type]
                              stable_offsets=True)
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="app.task.fencing"):
            offset = await asyncio.wait_for(start_offset(context, tp), SETTLED_WITHIN_S)
        print(f"start offset settled after {time.monotonic() - started:.2f}s")
    assert offset == 3
    fenced = [r for r in caplog.records if getattr(r, "event", None) == "zombie_fenced"]
    assert [r.transactional_id for r in fenced] == [f"{topics.group}-zombie-0"]
    assert stats.registry.get_sample_value("txingest_zombies_fenced_total") == 1
    assert [r.value for r in await read_all(kafka_bootstrap, topics.output)] == [b"before"]
    written = await read_all(kafka_bootstrap, topics.output, isolation="read_uncommitted")
    assert b"from the zombie" in [r.value for r in written]  # written, then aborted


async def test_a_live_member_s_open_transaction_is_never_fenced(kafka_bootstrap):
    topics = await create_topics(kafka_bootstrap, 1, name="fence")
    tp = TopicPartition(topics.input, 0)
    async with member(kafka_bootstrap, topics, client_id="txingest-zombie") as zombie:
        await abandon(kafka_bootstrap, topics, "zombie", consumer_group_metadata(zombie))
    async with contextlib.AsyncExitStack() as stack:
        live = await stack.enter_async_context(
            member(kafka_bootstrap, topics, client_id="txingest-live"))
        made = await stack.enter_async_context(producer(
            kafka_bootstrap, Membership(consumer_group_metadata(live)),
            transactional_id=f"{topics.group}-live-0"))
        await open_transaction(made, topics, 9, b"from the live member")
        stats = Stats()
        await fence_zombies(settings_of(kafka_bootstrap, topics, "other"), stats, [tp])
        assert stats.registry.get_sample_value("txingest_zombies_fenced_total") == 1
        still_open = await ongoing_transactions(made.client, topics.group)
        assert [t.transactional_id for t in still_open] == [f"{topics.group}-live-0"]
        # An id that merely starts alike (another prefix) is not ours.
        assert await ongoing_transactions(made.client, f"{topics.group}-liv") == []
        await made.commit_transaction()  # not fenced: it commits
        offsets = await fetch_stable_offsets(made.client, topics.group, [tp], timeout_s=30)
    assert offsets == {tp: 9}
    assert [r.value for r in await read_all(kafka_bootstrap, topics.output)] == [
        b"before", b"from the live member"]


async def test_a_departed_replica_s_outputs_without_offsets_are_swept_after_a_rebalance(
        kafka_bootstrap, services):
    """Transactions v1 sends records before offsets: a replica killed between them left
    nothing for ``require_stable`` to wait on, yet holds the output's last stable offset
    back. The member given input partition 0 fences such transactions at its assignment."""
    topics = await create_topics(kafka_bootstrap, 1, name="sweep")
    gone = f"{topics.group}-gone-0"

    async def output_settled() -> bool:
        return (await end_offsets(kafka_bootstrap, topics.output, "read_committed")
                == await end_offsets(kafka_bootstrap, topics.output, "read_uncommitted"))
    async with left_open(kafka_bootstrap, gone, topics.output, TRANSACTION_TIMEOUT_MS):
        assert not await output_settled()
        service = services(service_env(kafka_bootstrap, topics)).start()
        await wait_until(output_settled, SETTLED_WITHIN_S + 30, "the output's stable offset")
        assert await service.stop() == 0
    assert [e["transactional_id"] for e in service.events("zombie_fenced")] == [gone]
    assert await read_all(kafka_bootstrap, topics.output) == []
