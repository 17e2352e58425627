"""Benchmark (not a test): the service's own CPU per output record of a big file, by stage.

    python -m bench.per_record [--files 8] [--repeat 5]

S2's files (bench/workload.py large_file, 2-5 MB of NDJSON) go through the service's
own code with no Kafka and no HTTP: parse (app/files/parse.py), outputs (Preparer.outputs)
and record batches (app/kafka/committer.py's appending, into aiokafka batch builders of a
producer that is never started). Each stage is timed with process CPU time, best of
``--repeat``; the figures are microseconds per output record. What the broker, the
event loop and the network cost comes on top (S2 in ``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from app.config import load_settings
from app.files.budget import MemoryBudget
from app.files.parse import parse_transactions
from app.files.prepare import Preparer
from app.kafka.batches import send_batches
from app.ops.stats import Stats
from bench.workload import large_file


def best_of(repeat: int, stage: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        result = None  # the last repeat's objects are not in the next one's collections
        gc.collect()
        started = time.process_time()
        result = stage()
        best = min(best, time.process_time() - started)
    return best, result


class _Unsent:
    """A producer that builds real record batches and sends none of them."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.create_batch = producer.create_batch
        self.batches = 0

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future:
        self.batches += 1
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def batches(producer: AIOKafkaProducer, prepared: list[Any]) -> int:
    """Every record appended to batch builders by the committer's own code
    (app/kafka/batches.py); how many batches."""
    unsent = _Unsent(producer)
    for one in prepared:
        coroutine = send_batches(unsent, one.records, [])  # type: ignore[arg-type]
        try:
            coroutine.send(None)  # nothing in it waits: it runs to its end at once
        except StopIteration:
            continue
        raise RuntimeError("the send path waited for something")
    return unsent.batches


async def measure(files: int, repeat: int) -> dict[str, float]:
    settings = load_settings(["--kafka-bootstrap-servers", "unused:9092"], {})
    preparer = Preparer(settings, None, MemoryBudget(1 << 40), Stats())  # type: ignore[arg-type]
    bodies = [large_file(n, seed=1)[0] for n in range(files)]
    inputs = [ConsumerRecord("in", 0, n, 0, 0, None, b"u", None, 1, 1, [])
              for n in range(files)]
    url = "http://127.0.0.1:8000/files/000001.ndjson"
    parse_s, items = best_of(repeat, lambda: [
        parse_transactions(b, max_items=settings.max_transactions_per_file, keep_objects=False)
        for b in bodies])
    outputs_s, prepared = best_of(repeat, lambda: [
        preparer.outputs(msg, url, its, 1) for msg, its in zip(inputs, items, strict=True)])
    producer = AIOKafkaProducer(bootstrap_servers="unused:9092", transactional_id="bench",
                                linger_ms=0)
    batch_s, _ = best_of(repeat, lambda: batches(producer, prepared))
    records = sum(p.count for p in prepared)
    us = 1e6 / records
    return {"records": records, "parse_us": round(parse_s * us, 2),
            "outputs_us": round(outputs_s * us, 2), "batches_us": round(batch_s * us, 2),
            "total_us": round((parse_s + outputs_s + batch_s) * us, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    gc.freeze()  # the service's collector settings (app/__main__.py)
    gc.set_threshold(50_000, 20, 10)
    print(asyncio.run(measure(args.files, args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
