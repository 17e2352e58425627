"""The transaction and group coordinators found again when the way to them is lost
(aiokafka issue 1145, app/kafka/protocol/coordinator.py), on a private 3-node cluster
(tools/local_cluster.py: replication 3, min.insync.replicas 2, so a killed node's
partitions move).

- The broker coordinating a producer's transactional id (and its group) is killed
  (kill -9) while the producer commits transactions in a loop (an output record and an
  input offset each): the same producer commits again once the coordinators have
  moved, every record once under read_committed, the group's offset exact, nothing
  hanging. The bound is a generous timeout, not a timing assertion. The same with the
  service running: every file exactly once.
- A connection lost under a FindCoordinator request (closed while the request is in
  flight, as a reset would) is retried: aiokafka 0.14 alone ends the producer.
- A lost connection to the coordinators makes the producer look both up again before
  its next transactional request.

Run it under the shared lock; it starts three brokers (about 1 GB of heap each).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka import errors as kafka
from aiokafka.client import AIOKafkaClient, ConnectionGroup, CoordinationType
from aiokafka.conn import CloseReason
from aiokafka.protocol.coordination import FindCoordinatorRequest
from aiokafka.structs import TopicPartition

from app.kafka.protocol.group_commit import consumer_group_metadata
from app.kafka.protocol.producer import TransactionalProducer
from app.kafka.protocol.stable_offsets import fetch_stable_offsets
from tests.integration.harness import (
    Topics,
    assert_exactly_once,
    create_topics,
    read_all,
    service_env,
    unique,
    wait_until,
)
from tests.integration.test_faults import load_files, until_lag_below
from tests.integration.test_kip447 import member, transaction
from tools import local_cluster, local_kafka
from tools.kafka_io import coordinator
from tools.local_kafka import Broker

COMMITS_EACH_SIDE = 15      # transactions committed before the kill, and again after it
RECOVERY_TIMEOUT_S = 150    # the broker's fencing (9 s) and a partition's load, with room
TRANSACTION_TIMEOUT_S = 90  # one transaction longer than this is a hang


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Broker]]:
    data = tmp_path_factory.mktemp("cluster")
    nodes = local_cluster.start(3, data)
    try:
        yield nodes
    finally:
        local_cluster.stop(data)


class CommitLoop:
    """Transaction after transaction on one producer: record ``n`` and offset ``n + 1``.
    It stops at the first error (kept in ``error``) or when asked to."""

    def __init__(self, producer: TransactionalProducer, topics: Topics) -> None:
        self.producer, self.topics = producer, topics
        self.committed = 0
        self.error: BaseException | None = None
        self.stopping = False

    async def run(self) -> None:
        try:
            while not self.stopping:
                await asyncio.wait_for(transaction(
                    self.producer, self.topics, self.committed + 1, str(self.committed).encode()),
                    TRANSACTION_TIMEOUT_S)
                self.committed += 1
        except Exception as exc:
            self.error = exc

    async def reaches(self, count: int, what: str) -> None:
        async def reached() -> bool:
            return self.committed >= count or self.error is not None
        await wait_until(reached, RECOVERY_TIMEOUT_S, what, every=0.1)
        assert self.error is None, f"the producer failed: {self.error!r}"


async def group_coordinated_by(bootstrap: str, node: int) -> str:
    """A fresh group name whose coordinator is ``node`` (one in three names is)."""
    for _ in range(60):
        group = unique("coord-group")
        if await coordinator(bootstrap, CoordinationType.GROUP, group) == node:
            return group
    raise AssertionError(f"no group name coordinated by node {node} in 60 tries")


class LookUps:
    """The coordinator types a client's FindCoordinator requests ask for, in order. With
    ``reset``, the connection under the first request for each type is closed while
    the request is in flight, as a connection reset would close it."""

    def __init__(self, client: AIOKafkaClient, reset: bool = False) -> None:
        self.client, self.reset = client, reset
        self.kinds: list[int] = []
        self.resets: list[int] = []  # the types whose request lost its connection
        self._send = client.send
        client.send = self.send

    async def send(self, node_id: int, request: object,
                   group: ConnectionGroup = ConnectionGroup.DEFAULT) -> object:
        if not isinstance(request, FindCoordinatorRequest):
            return await self._send(node_id, request, group=group)
        kind = request._coordinator_type
        self.kinds.append(kind)
        if not self.reset or self.kinds.count(kind) > 1:
            return await self._send(node_id, request, group=group)
        if not await self.client.ready(node_id, group=group):
            raise kafka.NodeNotReadyError(node_id)
        connection = self.client._conns[(node_id, group)]
        answer = connection.send(request)
        connection.close(reason=CloseReason.CONNECTION_BROKEN)
        self.resets.append(kind)
        return await answer


@pytest.fixture
async def kill_node(cluster: list[Broker]) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    """kill -9 of a node, by its id; every node killed is started again afterwards."""
    killed: list[Broker] = []

    async def kill(node: int) -> None:
        killed.append(cluster[node - 1])  # local_cluster: node ids 1..n, in order
        await asyncio.to_thread(local_kafka.kill, killed[-1].data)
    yield kill
    for broker in killed:
        await asyncio.to_thread(local_kafka.restart, broker.data, 180)


def producer_of(bootstrap: str, consumer: AIOKafkaConsumer,
                transactional_id: str) -> TransactionalProducer:
    return TransactionalProducer(
        group_metadata=functools.partial(consumer_group_metadata, consumer),
        bootstrap_servers=bootstrap, transactional_id=transactional_id)


async def committed_offset(producer: TransactionalProducer, topics: Topics) -> int | None:
    tp = TopicPartition(topics.input, 0)
    offsets = await fetch_stable_offsets(producer.client, topics.group, [tp], timeout_s=30)
    return offsets[tp]


async def assert_outputs(bootstrap: str, topics: Topics, count: int) -> None:
    """Records 0 .. count - 1, each once and in order, under read_committed."""
    values = [r.value for r in await read_all(bootstrap, topics.output)]
    assert values == [str(n).encode() for n in range(count)]


async def test_a_connection_lost_under_find_coordinator_is_retried(
        cluster: list[Broker]) -> None:
    bootstrap = local_cluster.bootstrap(cluster)
    topics = await create_topics(bootstrap, 1, name="coord", replicas=3)
    async with member(bootstrap, topics) as consumer:
        producer = producer_of(bootstrap, consumer, unique("coord-txn"))
        look_ups = LookUps(producer.client, reset=True)
        try:
            await producer.start()  # its transaction coordinator's look-up is reset
            for n in range(3):      # the first offset commit's group look-up too
                await transaction(producer, topics, n + 1, str(n).encode())
            resets = list(look_ups.resets)
            offset = await committed_offset(producer, topics)
        finally:
            await producer.stop()
    assert resets == [CoordinationType.TRANSACTION, CoordinationType.GROUP]
    assert offset == 3
    await assert_outputs(bootstrap, topics, 3)


async def test_a_lost_coordinator_connection_makes_both_coordinators_looked_up_again(
        cluster: list[Broker]) -> None:
    bootstrap = local_cluster.bootstrap(cluster)
    topics = await create_topics(bootstrap, 1, name="coord", replicas=3)
    async with member(bootstrap, topics) as consumer:
        producer = producer_of(bootstrap, consumer, unique("coord-txn"))
        look_ups = LookUps(producer.client)
        await producer.start()
        try:
            await transaction(producer, topics, 1, b"0")
            before = len(look_ups.kinds)
            for (_, group), connection in list(producer.client._conns.items()):
                if group is ConnectionGroup.COORDINATION:
                    connection.close(reason=CloseReason.CONNECTION_BROKEN)
            await transaction(producer, topics, 2, b"1")
            again = look_ups.kinds[before:]
            offset = await committed_offset(producer, topics)
        finally:
            await producer.stop()
    assert sorted(again) == [CoordinationType.GROUP, CoordinationType.TRANSACTION]
    assert offset == 2
    await assert_outputs(bootstrap, topics, 2)


async def test_the_same_producer_commits_again_after_its_coordinators_node_is_killed(
        cluster: list[Broker], kill_node: Callable[[int], Awaitable[None]]) -> None:
    bootstrap = local_cluster.bootstrap(cluster)
    topics = await create_topics(bootstrap, 1, name="coord", replicas=3)
    transactional_id = unique("coord-txn")
    node = await coordinator(bootstrap, CoordinationType.TRANSACTION, transactional_id)
    topics.group = await group_coordinated_by(bootstrap, node)
    async with member(bootstrap, topics) as consumer:
        producer = producer_of(bootstrap, consumer, transactional_id)
        await producer.start()
        try:
            loop = CommitLoop(producer, topics)
            running = asyncio.ensure_future(loop.run())
            await loop.reaches(COMMITS_EACH_SIDE, "commits before the kill")
            await kill_node(node)
            await loop.reaches(loop.committed + COMMITS_EACH_SIDE,
                               f"commits after node {node}, the coordinator, was killed")
            loop.stopping = True
            await running
            assert loop.error is None, f"the producer failed: {loop.error!r}"
            offset = await committed_offset(producer, topics)
        finally:
            await producer.stop()
    assert await coordinator(bootstrap, CoordinationType.TRANSACTION, transactional_id) != node
    assert offset == loop.committed
    await assert_outputs(bootstrap, topics, loop.committed)


async def test_the_service_carries_on_after_its_coordinators_node_is_killed(
        cluster: list[Broker], kill_node: Callable[[int], Awaitable[None]], file_server,
        services) -> None:
    bootstrap = local_cluster.bootstrap(cluster)
    topics = await create_topics(bootstrap, 1, name="coord-svc", replicas=3)
    env = service_env(bootstrap, topics, TRANSACTIONAL_ID_PREFIX=unique("coord-svc"))
    transactional_id = f"{env['TRANSACTIONAL_ID_PREFIX']}-{topics.input}-0"
    node = await coordinator(bootstrap, CoordinationType.TRANSACTION, transactional_id)
    topics.group = env["GROUP_ID"] = await group_coordinated_by(bootstrap, node)
    expected = await load_files(bootstrap, file_server, topics, 150, delay=0.02)
    service = services(env).start()
    await until_lag_below(bootstrap, topics, len(expected) - 30)
    await kill_node(node)
    await until_lag_below(bootstrap, topics, 0, timeout=RECOVERY_TIMEOUT_S)
    assert await service.stop() == 0
    assert_exactly_once(await read_all(bootstrap, topics.output), expected)
    assert await read_all(bootstrap, topics.dlq) == []
    print(f"tasks replaced after the kill: {len(service.events('task_failed'))}")
