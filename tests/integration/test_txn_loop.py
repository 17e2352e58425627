"""The benchmark's per-record reference loop in Python (bench/txn_loop.py), a short
smoke run per producer class on the real broker, checked by the scenario's exact gate
(bench/txn_scenario.py): the group's committed offset is the number of transactions,
and read_committed returns each of their records once. Nothing here is timed."""

from __future__ import annotations

import pytest

from bench import txn_scenario
from bench.txn_loop import loop
from tests.integration.harness import create_topics

TRANSACTIONS = 20


@pytest.mark.parametrize("producer", ["aiokafka.AIOKafkaProducer", txn_scenario.NEW_LAYER])
async def test_the_loop_commits_every_transaction_with_its_offset_exactly_once(
        kafka_bootstrap, producer):
    topics = await create_topics(kafka_bootstrap, 1, name="txnloop")
    result = await loop({"bootstrap": kafka_bootstrap, "input": topics.input,
                         "output": topics.output, "group": topics.group,
                         "transactional_id": f"{topics.group}-txn", "producer": producer,
                         "retry_backoff_ms": 5, "transactions": TRANSACTIONS})
    assert len(result["committed_at_s"]) == TRANSACTIONS
    gate = await txn_scenario.gate(kafka_bootstrap, topics, TRANSACTIONS)
    assert gate == {"ok": True, "committed": {0: TRANSACTIONS}, "expected": 3 * TRANSACTIONS,
                    "read": 3 * TRANSACTIONS, "distinct": 3 * TRANSACTIONS}
    # The gate fails a run that committed fewer transactions than it was asked for.
    assert not (await txn_scenario.gate(kafka_bootstrap, topics, TRANSACTIONS + 1))["ok"]
