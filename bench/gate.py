"""The correctness gate every run must pass: read the output back with read_committed.

Expected: for each input record below the group's committed offset, exactly its
file's transaction count of output records, each (source partition, source
offset, index) once, and nothing dead-lettered. A run that fails is discarded
from the medians and reported.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.workload import file_number
from tools.kafka_io import end_offsets


async def check(bootstrap: str, topic: str, dlq: str, committed: list[int], counts: list[int],
                partitions: int) -> dict:
    expected = {(p, o): counts[file_number(p, o, partitions)]
                for p, upto in enumerate(committed) for o in range(upto)}
    seen = {key: bytearray(n) for key, n in expected.items()}
    total = duplicates = unexpected = 0
    started = time.monotonic()
    async for headers in _headers(bootstrap, topic):
        total += 1
        key = (int(headers["source-partition"]), int(headers["source-offset"]))
        index, marks = int(headers["index"]), seen.get(key)
        if marks is None or index >= len(marks):
            unexpected += 1
        elif marks[index]:
            duplicates += 1
        else:
            marks[index] = 1
    want = sum(expected.values())
    dead = sum((await end_offsets(bootstrap, dlq, "read_committed")).values())
    ok = total == want and duplicates == unexpected == dead == 0
    return {"ok": ok, "expected": want, "read": total, "duplicates": duplicates,
            "unexpected": unexpected, "dead_lettered_offsets": dead,
            "read_s": round(time.monotonic() - started, 1)}


async def _headers(bootstrap: str, topic: str):
    """Each record's headers as a dict, to the topic's last stable offset."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                enable_auto_commit=False, group_id=None,
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if end[tp] > 0}
        stalled_since = time.monotonic()
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=50_000)
            if batch:
                stalled_since = time.monotonic()
            elif time.monotonic() - stalled_since > 60:
                raise RuntimeError(f"gate: reading {topic} stalled before {end}")
            for part in batch.values():
                for record in part:
                    yield dict(record.headers)
            remaining = {tp for tp in remaining if await consumer.position(tp) < end[tp]}
    finally:
        await consumer.stop()
