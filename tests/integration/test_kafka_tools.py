"""The chaos run's use of Kafka's own transaction tool (chaos/txncheck.py), on the real
broker, with the tool's jars of the broker's version (run it with KAFKA_VERSION unset
for 4.4.0, and with KAFKA_VERSION=3.9.1): a transaction a raw producer leaves open is
found and fails the check; once it commits, the check passes and names its id."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from chaos.txncheck import Scope, check, service_transactional_ids
from tests.integration.harness import create_topics, unique


async def test_a_transaction_left_open_fails_the_check_and_passes_once_committed(
        kafka_bootstrap):
    topics = await create_topics(kafka_bootstrap, 2)
    prefix = unique("txncheck")
    pattern = service_transactional_ids(prefix, topics.input, ["pod-0"])
    scope = Scope(prefix, frozenset({topics.input, topics.output, topics.dlq}))
    transactional_id = f"{prefix}-pod-0-1"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap,
                                transactional_id=transactional_id)
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(topics.output, b"left open", partition=1)

        left_open = await check(kafka_bootstrap, pattern, scope, settle_s=2)
        assert left_open.ids == [transactional_id]
        assert left_open.open == [f"{transactional_id}: Ongoing"]
        assert [f.split(":")[0] for f in left_open.failures] == ["open_after_run=1"]

        await producer.commit_transaction()
        settled = await check(kafka_bootstrap, pattern, scope)
        assert settled.failures == []
        assert settled.ids == [transactional_id]
        assert settled.hanging == []
    finally:
        await producer.stop()


async def test_an_id_not_of_the_service_s_form_fails_the_check(kafka_bootstrap):
    topics = await create_topics(kafka_bootstrap, 1)
    prefix = unique("txncheck")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap,
                                transactional_id=f"{prefix}-{topics.input}-0")  # per partition
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topics.output, b"committed", partition=0)
    finally:
        await producer.stop()
    pattern = service_transactional_ids(prefix, topics.input, ["pod-0"])
    verdict = await check(kafka_bootstrap, pattern, Scope(prefix, frozenset({topics.output})))
    assert verdict.unexpected_ids == [f"{prefix}-{topics.input}-0"]
    assert [f.split(":")[0] for f in verdict.failures] == ["unexpected_transactional_ids=1"]
