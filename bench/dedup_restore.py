"""Benchmark (not a test): how fast a partition's dedup store restores, and its size.

    python -m bench.dedup_restore [--entries 1000000] [--bootstrap HOST:PORT]

Writes ``--entries`` changelog entries (as the service writes them) to one partition
of a fresh compacted topic, then restores them with the service's own restore
consumer and store: once untraced for the time and the rate, once more under
tracemalloc for the store's memory (what restore allocated that is still alive once
the consumer is stopped: the dict, its keys and entries). Without --bootstrap it
starts a local broker (tools/local_kafka.py) and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from app.config import load_settings
from app.dedup.store import DIGEST_BYTES, Deduplicator, DedupStore, entry_value
from app.kafka.clients import make_restore_consumer
from tools.kafka_io import unique

GOAL_SECONDS, GOAL_MB = 10.0, 150.0


async def write_entries(bootstrap: str, topic: str, entries: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1,
                                            topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                max_batch_size=1 << 20, acks=1)
    await producer.start()
    try:
        now, pending = int(time.time()), []
        for offset in range(entries):
            key = hashlib.sha256(b"file-%d" % offset).digest()[:DIGEST_BYTES]
            pending.append(await producer.send(topic, entry_value(offset, now), key=key,
                                               partition=0))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def restore_once(settings, topic: str, entries: int,
                       traced: bool) -> tuple[int, float, int]:
    """(entries restored, seconds, bytes still allocated once the consumer is gone)."""
    gc.collect()
    if traced:
        tracemalloc.start()
    dedup = Deduplicator("url", DedupStore(entries, 365 * 86400.0), TopicPartition(topic, 0))
    consumer = make_restore_consumer(settings)
    await consumer.start()
    try:
        started = time.monotonic()
        restored = await dedup.restore(consumer)
        seconds = time.monotonic() - started
    finally:
        await consumer.stop()
    del consumer
    gc.collect()
    # What survives the consumer is the store: its dict, keys and packed values.
    held = tracemalloc.get_traced_memory()[0] if traced else 0
    tracemalloc.stop()
    return restored, seconds, held


async def restore(bootstrap: str, topic: str, entries: int) -> dict[str, float]:
    """Timed without tracing (tracemalloc slows allocation), then measured with it."""
    settings = load_settings(["--kafka-bootstrap-servers", bootstrap], {})
    restored, seconds, _ = await restore_once(settings, topic, entries, traced=False)
    _, traced_seconds, store_bytes = await restore_once(settings, topic, entries, traced=True)
    return {"entries": restored, "seconds": round(seconds, 2),
            "entries_per_s": round(restored / seconds),
            "traced_seconds": round(traced_seconds, 2),
            "store_mb": round(store_bytes / 2**20, 1),
            "bytes_per_entry": round(store_bytes / max(restored, 1))}


async def run(args: argparse.Namespace) -> int:
    topic = unique("bench-dedup")
    print(f"writing {args.entries} entries to {topic}", flush=True)
    await write_entries(args.bootstrap, topic, args.entries)
    result = await restore(args.bootstrap, topic, args.entries)
    met = result["seconds"] < GOAL_SECONDS and result["store_mb"] < GOAL_MB
    print(f"restore: {result} goal (<{GOAL_SECONDS:.0f} s, <{GOAL_MB:.0f} MB): "
          f"{'met' if met else 'missed'}")
    return 0 if result["entries"] == args.entries else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--bootstrap")
    args = parser.parse_args()
    if args.bootstrap:
        return asyncio.run(run(args))
    from tools import local_kafka
    data = Path(tempfile.mkdtemp(prefix="txingest-bench-dedup-"))
    broker = local_kafka.start(data=data)
    try:
        args.bootstrap = broker.bootstrap
        return asyncio.run(run(args))
    finally:
        local_kafka.stop(data)


if __name__ == "__main__":
    sys.exit(main())
