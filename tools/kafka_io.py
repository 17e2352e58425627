"""Kafka helpers shared by the tests, the demo and the benchmarks (not by the service).

Topics with unique names, producing inputs, reading a topic to its end, and the
group's lag: what every check of "exactly once" needs. Each helper passes any
``client_options`` (security_protocol, ssl_context, sasl_*) to the clients it makes.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import CreateAclsRequest, DeleteAclsRequest


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


@dataclass
class Topics:
    input: str
    output: str
    dlq: str
    group: str
    partitions: int


async def create_topics(bootstrap: str, partitions: int, output_config: dict | None = None,
                        name: str = "t", dlq_config: dict | None = None, replicas: int = 1,
                        **client_options: Any) -> Topics:
    topics = Topics(unique(f"{name}-in"), unique(f"{name}-out"), unique(f"{name}-dlq"),
                    unique(f"{name}-group"), partitions)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options)
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(topics.input, partitions, replicas),
            NewTopic(topics.output, partitions, replicas, topic_configs=output_config or {}),
            NewTopic(topics.dlq, 1, replicas, topic_configs=dlq_config or {}),
        ])
    finally:
        await admin.close()
    return topics


async def delete_topics(bootstrap: str, topics: Topics) -> None:
    """Free a throwaway broker's disk between runs; a leftover topic costs disk only."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topics.input, topics.output, topics.dlq])
    except Exception as exc:
        print(f"could not delete topics: {exc!r}", file=sys.stderr)
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, values: list[bytes], partitions: int,
                  keys: list[bytes] | None = None, **client_options: Any) -> None:
    """Input records spread round-robin over the partitions, or keyed by ``keys`` (each
    key's partition is the default partitioner's, as the service asks of its producers)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **client_options)
    await producer.start()
    try:
        for i, value in enumerate(values):
            if keys is not None:
                await producer.send(topic, value, key=keys[i])
            else:
                await producer.send(topic, value, key=str(i).encode(), partition=i % partitions)
        await producer.flush()
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, isolation: str = "read_committed",
                   **client_options: Any) -> list:
    """Every record of the topic up to its end (the last stable offset when committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation,
                                enable_auto_commit=False, group_id=None, **client_options)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)
                                                        or await _partitions(consumer, topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records: list = []
        deadline = time.monotonic() + 60
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end {end}")
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


async def lag(bootstrap: str, topics: Topics, **client_options: Any) -> int:
    """Input records not yet covered by the group's committed offsets."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, **client_options)
    await admin.start()
    await consumer.start()
    try:
        committed = await _group_offsets(admin, topics.group)
        tps = [TopicPartition(topics.input, p) for p in range(topics.partitions)]
        end = await consumer.end_offsets(tps)
        return sum(end[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)
    finally:
        await consumer.stop()
        await admin.close()


async def committed_offsets(bootstrap: str, topics: Topics) -> dict[int, int]:
    """The group's committed offsets on the input, by partition (pending ones not included)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await _group_offsets(admin, topics.group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topics.input}


async def _group_offsets(admin: AIOKafkaAdminClient, group: str) -> dict:
    deadline = time.monotonic() + 30
    while True:
        try:
            return await admin.list_consumer_group_offsets(group)
        except KafkaError as exc:  # the coordinator may still be loading
            if not exc.retriable or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def coordinator(bootstrap: str, kind: CoordinationType, key: str) -> int:
    """The node id of the broker coordinating ``key`` (a transactional id or a group),
    as a FindCoordinator request answers now. Retried while the answer is a retriable
    error: the first look-up creates the coordinators' internal topic."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    deadline = time.monotonic() + 60
    try:
        await client.bootstrap()
        while True:
            try:
                return int(await client.coordinator_lookup(kind, key))
            except KafkaError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await client.close()


def by_source(records: list) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for r in records:
        out[dict(r.headers)["source-url"].decode()].append(r)
    return out




async def end_offsets(bootstrap: str, topic: str, isolation: str,
                      **client_options: Any) -> dict[TopicPartition, int]:
    """The topic's end per partition: the last stable offset under read_committed."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation,
                                **client_options)
    await consumer.start()
    # Let aiokafka's background task start: stopping before it ran re-raises its
    # cancellation from stop() (aiokafka 0.14).
    await asyncio.sleep(0)
    try:
        tps = [TopicPartition(topic, p) for p in await _partitions(consumer, topic)]
        return await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


# Kafka's codes in CreateAcls/DeleteAcls (its AclOperation, ResourceType and friends).
_ACL_TOPIC, _ACL_LITERAL, _ACL_WRITE, _ACL_DENY = 2, 3, 4, 2
# The broker settings that turn ACLs on, in a broker that otherwise lets anyone do anything.
AUTHORIZER_PROPERTIES = {
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "allow.everyone.if.no.acl.found": "true",
}


async def deny_writes(bootstrap: str, topic: str, denied: bool = True) -> None:
    """Add (or, with ``denied=False``, remove) an ACL denying every principal Write on
    ``topic``, on a broker started with AUTHORIZER_PROPERTIES."""
    acl = (_ACL_TOPIC, topic, _ACL_LITERAL, "User:*", "*", _ACL_WRITE, _ACL_DENY)
    request = CreateAclsRequest(*acl) if denied else DeleteAclsRequest(*acl)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin._send_request(request)  # aiokafka has no ACL API of its own
    finally:
        await admin.close()
    results = response.creation_responses if denied else response.filter_responses
    errors = [result[0] for result in results if result[0]]
    if errors:
        raise RuntimeError(f"ACL change on {topic} refused: error codes {errors}")


async def offered_protocol(bootstrap: str) -> str:
    """The best transaction protocol the brokers offer: v2, v1 (KIP-447) or legacy."""
    from app.kafka.protocol.negotiate import choose, cluster_features

    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        return choose("auto", await cluster_features(client)).value
    finally:
        await client.close()
