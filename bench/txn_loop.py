"""The reference loop in Python: ``python -m bench.txn_loop '<json config>'``.

One transactional producer, sequential per-record transactions, as Kafka's Java client
does them in bench/kstreams/.../TxnLoop.java: begin, three records to output partition
0, input partition 0's next offset sent to the transaction, commit. A consumer that is
a real member of the group (subscribed to the input, assigned) stands behind the
offsets.

The producer is ``producer`` in the config, a dotted path to a class: plain aiokafka
(``aiokafka.AIOKafkaProducer``) or the service's producer
(``app.kafka.protocol.producer.TransactionalProducer``). It is made with aiokafka's
producer options, with ``group_metadata`` (the member's generation, member id and
instance id, read at each offset commit) when its constructor takes that argument, and
with ``transactions_v2`` (then the offsets go first) where the cluster offers it.

The last line is ``RESULT {json}`` with each commit's time since the first begin;
bench/txn_scenario.py turns that into rates, the same way for every client.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import sys
import time
from typing import Any

import orjson
import uvloop
from aiokafka import AIOKafkaConsumer, TopicPartition

from tools.kafka_io import offered_protocol

RECORDS = 3
JOIN_TIMEOUT_S = 60.0
LINGER_MS = 5


def producer_class(dotted: str) -> type:
    """The class at ``module.Class``; a clear error for a path that names none."""
    module_name, _, name = dotted.rpartition(".")
    if not module_name:
        raise SystemExit(f"txn_loop: producer {dotted!r} is not a dotted path module.Class")
    found = getattr(importlib.import_module(module_name), name, None)
    if not inspect.isclass(found):
        raise SystemExit(f"txn_loop: {dotted!r} names no class")
    return found


async def make_producer(cfg: dict, member: AIOKafkaConsumer) -> Any:
    cls = producer_class(cfg["producer"])
    options: dict[str, Any] = {"bootstrap_servers": cfg["bootstrap"],
                               "transactional_id": cfg["transactional_id"],
                               "retry_backoff_ms": cfg["retry_backoff_ms"],
                               # Kafka's Java client's default (4.x), so both clients
                               # gather a transaction's records in one batch alike.
                               "linger_ms": LINGER_MS,
                               "enable_idempotence": True}
    if "group_metadata" in inspect.signature(cls).parameters:
        from app.kafka.protocol.group_commit import consumer_group_metadata
        options["group_metadata"] = functools.partial(consumer_group_metadata, member)
    if "transactions_v2" in inspect.signature(cls).parameters:
        options["transactions_v2"] = await offered_protocol(cfg["bootstrap"]) == "v2"
    return cls(**options)


async def joined(cfg: dict) -> AIOKafkaConsumer:
    """A member of the group with the input assigned: its membership is the real one."""
    member = AIOKafkaConsumer(bootstrap_servers=cfg["bootstrap"], group_id=cfg["group"],
                              enable_auto_commit=False, isolation_level="read_committed")
    await member.start()
    member.subscribe([cfg["input"]])
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while not member.assignment():
        if time.monotonic() > deadline:
            await member.stop()
            raise RuntimeError(f"txn_loop: no assignment in group {cfg['group']} "
                               f"within {JOIN_TIMEOUT_S:.0f}s")
        await member.getmany(timeout_ms=100)
    return member


async def loop(cfg: dict) -> dict:
    member = await joined(cfg)
    producer = await make_producer(cfg, member)
    offsets_first = getattr(producer, "transactions_v2", False)  # (app/kafka/protocol/txn_v2.py)
    source = TopicPartition(cfg["input"], 0)
    committed_at: list[float] = []
    try:
        await producer.start()
        started = time.monotonic()
        for i in range(cfg["transactions"]):
            await producer.begin_transaction()
            if offsets_first:
                await producer.send_offsets_to_transaction({source: i + 1}, cfg["group"])
            sent = [await producer.send(cfg["output"], value(i, r), partition=0)
                    for r in range(RECORDS)]
            if not offsets_first:
                await producer.send_offsets_to_transaction({source: i + 1}, cfg["group"])
            await producer.commit_transaction()
            await asyncio.gather(*sent)  # delivered (the commit flushed them)
            committed_at.append(time.monotonic() - started)
    finally:
        await producer.stop()
        await member.stop()
    return {"client": cfg["producer"], "committed_at_s": committed_at}


def value(transaction: int, record: int) -> bytes:
    return b'{"txn":%d,"record":%d}' % (transaction, record)


def main() -> None:
    cfg = orjson.loads(sys.argv[1])
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(loop(cfg))
    print("RESULT " + orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
