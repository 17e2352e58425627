"""Hard limits on the real broker: a record whose transaction can never commit within
TRANSACTION_TIMEOUT_MS is dead-lettered after MAX_ATTEMPTS, and its partition moves on."""

from __future__ import annotations

import json

from tests.integration.harness import (
    Route,
    create_topics,
    make_items,
    produce,
    read_all,
    service_env,
    wait_committed,
)

# Tiny items make the most output records per byte: sending them must outlast the
# timeout plus the broker's scan for timed-out transactions (tools/local_kafka.py) in
# every attempt. 600,000 did not always since sends got faster: one attempt committed.
BIG_FILE_ITEMS = 1_500_000


async def test_a_transaction_that_always_times_out_is_dead_lettered(
        kafka_bootstrap, file_server, services):
    topics = await create_topics(kafka_bootstrap, partitions=1, name="txtimeout")
    big = b"".join(b'{"i":%d}\n' % i for i in range(BIG_FILE_ITEMS))
    big_url = file_server.add("big.ndjson", Route(big))
    small_items = make_items("after", 3)
    small_url = file_server.add("small.ndjson", Route(b"\n".join(small_items)))
    await produce(kafka_bootstrap, topics.input, [big_url.encode(), small_url.encode()],
                  topics.partitions)
    service = services(service_env(
        kafka_bootstrap, topics, TRANSACTION_TIMEOUT_MS="500", SHUTDOWN_TIMEOUT_S="0.4",
        MAX_ATTEMPTS="2", MAX_TRANSACTIONS_PER_FILE=str(BIG_FILE_ITEMS))).start()

    await wait_committed(kafka_bootstrap, topics, 240)
    assert await service.stop() == 0

    dead = await read_all(kafka_bootstrap, topics.dlq)
    assert len(dead) == 1, [d.value for d in dead]
    letter = json.loads(dead[0].value)
    assert letter["reason"] == "transaction_timeout" and letter["source"]["offset"] == 0
    outputs = await read_all(kafka_bootstrap, topics.output)
    sources = {dict(r.headers)["source-url"].decode() for r in outputs}
    assert sources == {small_url}, "no output of the timed-out file is visible"
    assert [r.value for r in outputs] == small_items
    timed_out = [e for e in service.events("task_failed") if "transaction timed out" in e["msg"]]
    assert len(timed_out) == 2, "dead-lettered after MAX_ATTEMPTS timed-out transactions"
    # Each timeout is reported once, as a failed task: no asyncio error about what the
    # fenced producer left behind that nobody awaits (app/ops/log.py, loop_exceptions).
    assert "never retrieved" not in service.log_text()
