"""Transactions v2 (KIP-890 part 2) through the protocol layer, on the real broker.

Each transaction is three requests (TxnOffsetCommit, Produce, EndTxn; never
AddPartitionsToTxn or AddOffsetsToTxn) and ends on a new producer epoch, committed or
aborted; a read_committed reader sees exactly the committed ones. Skipped on a broker
that does not offer transactions v2 (3.9.1).
"""

from __future__ import annotations

import collections
import contextlib
from typing import Any

import pytest
from aiokafka import errors as kafka
from aiokafka.structs import TopicPartition

from app.kafka.protocol.group_commit import consumer_group_metadata
from app.kafka.protocol.producer import TransactionalProducer
from app.kafka.protocol.stable_offsets import fetch_stable_offsets
from tests.integration.harness import (
    Topics,
    create_topics,
    read_all,
    unique,
)
from tests.integration.test_kip447 import member
from tests.integration.test_kip447 import producer as kip447_producer
from tools.kafka_io import offered_protocol

ADD_PARTITIONS, ADD_OFFSETS, PRODUCE, END_TXN, TXN_OFFSET_COMMIT = 24, 25, 0, 26, 28


@pytest.fixture(autouse=True)
async def _v2_offered(kafka_bootstrap):
    if await offered_protocol(kafka_bootstrap) != "v2":
        pytest.skip("this broker does not offer transactions v2")


class Requests:
    """The API keys of the requests a client sends: a window on its real traffic."""

    def __init__(self, client: Any) -> None:
        self.keys: collections.Counter[int] = collections.Counter()
        sending = client.send

        async def send(node_id: int, request: Any, *args: Any, **kwargs: Any) -> Any:
            self.keys[request.API_KEY] += 1
            return await sending(node_id, request, *args, **kwargs)
        client.send = send

    def taken(self) -> collections.Counter[int]:
        taken, self.keys = self.keys, collections.Counter()
        return taken


def producer(bootstrap: str, owner: Any, transactional_id: str = ""
             ) -> contextlib.AbstractAsyncContextManager[TransactionalProducer]:
    """test_kip447's producer, speaking transactions v2 with the owner's membership."""
    return kip447_producer(bootstrap, lambda: consumer_group_metadata(owner), "v2",
                           transactional_id=transactional_id or unique("v2-txn"))


async def transaction(made: TransactionalProducer, topics: Topics, offset: int,
                      values: list[bytes], commit: bool = True) -> None:
    await made.begin_transaction()
    await made.send_offsets_to_transaction({TopicPartition(topics.input, 0): offset},
                                           topics.group)
    sent = [await made.send(topics.output, value, partition=i % 2)
            for i, value in enumerate(values)]
    for future in sent:
        await future
    if commit:
        await made.commit_transaction()
    else:
        await made.abort_transaction()


def epoch(made: TransactionalProducer) -> tuple[int, int]:
    return made._txn_manager.producer_id, made._txn_manager.producer_epoch


async def committed_offset(made: TransactionalProducer, topics: Topics) -> int | None:
    tp = TopicPartition(topics.input, 0)
    offsets = await fetch_stable_offsets(made.client, topics.group, [tp], timeout_s=30)
    return offsets[tp]


async def test_each_transaction_is_three_requests_and_a_new_epoch(kafka_bootstrap):
    topics = await create_topics(kafka_bootstrap, 2, name="v2")
    async with member(kafka_bootstrap, topics) as owner, \
            producer(kafka_bootstrap, owner) as made:
        requests = Requests(made.client)
        pid, first_epoch = epoch(made)
        for n in range(1, 21):
            await transaction(made, topics, n, [b"%d-%d" % (n, i) for i in range(3)])
            assert epoch(made) == (pid, first_epoch + n)  # EndTxn's answer, taken
            sent = requests.taken()
            assert sent[ADD_PARTITIONS] == sent[ADD_OFFSETS] == 0, sent
            assert sent[TXN_OFFSET_COMMIT] >= 1 and sent[END_TXN] == 1, sent
            assert 1 <= sent[PRODUCE] <= 2, sent  # one per leader: one broker here
        assert await committed_offset(made, topics) == 20
    values = sorted(r.value for r in await read_all(kafka_bootstrap, topics.output))
    assert values == sorted(b"%d-%d" % (n, i) for n in range(1, 21) for i in range(3))


async def test_an_aborted_transaction_is_never_seen_and_bumps_the_epoch(kafka_bootstrap):
    topics = await create_topics(kafka_bootstrap, 2, name="v2")
    async with member(kafka_bootstrap, topics) as owner, \
            producer(kafka_bootstrap, owner) as made:
        pid, start = epoch(made)
        await transaction(made, topics, 1, [b"kept-1", b"kept-2"])
        await transaction(made, topics, 2, [b"aborted-1", b"aborted-2"], commit=False)
        assert epoch(made) == (pid, start + 2)
        await transaction(made, topics, 3, [b"kept-3"])
        assert await committed_offset(made, topics) == 3
    assert sorted(r.value for r in await read_all(kafka_bootstrap, topics.output)) == [
        b"kept-1", b"kept-2", b"kept-3"]
    uncommitted = await read_all(kafka_bootstrap, topics.output, isolation="read_uncommitted")
    assert b"aborted-1" in [r.value for r in uncommitted]  # written, then aborted


async def test_an_abort_with_nothing_sent_sends_nothing(kafka_bootstrap):
    topics = await create_topics(kafka_bootstrap, 2, name="v2")
    async with member(kafka_bootstrap, topics) as owner, \
            producer(kafka_bootstrap, owner) as made:
        requests = Requests(made.client)
        before = epoch(made)
        await made.begin_transaction()
        await made.abort_transaction()
        assert requests.taken()[END_TXN] == 0 and epoch(made) == before
        await transaction(made, topics, 4, [b"after"])
        assert await committed_offset(made, topics) == 4


async def test_a_newer_producer_with_the_same_id_fences_this_one(kafka_bootstrap):
    topics = await create_topics(kafka_bootstrap, 2, name="v2")
    shared = unique("v2-fenced")
    async with member(kafka_bootstrap, topics) as owner, \
            producer(kafka_bootstrap, owner, shared) as old:
        await transaction(old, topics, 1, [b"old"])
        async with producer(kafka_bootstrap, owner, shared) as new:
            with pytest.raises(kafka.ProducerFenced):
                await transaction(old, topics, 2, [b"zombie"])
            await transaction(new, topics, 3, [b"new"])
            assert await committed_offset(new, topics) == 3
    assert sorted(r.value for r in await read_all(kafka_bootstrap, topics.output)) == [
        b"new", b"old"]
