"""Benchmark (not a test): the service's own CPU per output record of a big file, by stage.

    python -m bench.per_record [--files 8] [--repeat 5]

S2's files (bench/workload.py large_file, 2-5 MB of NDJSON) go through the service's
own code with no Kafka and no HTTP: parse (app/parse.py), outputs (Preparer.outputs)
and record batches (app/commit.py's appending, into aiokafka batch builders of a
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

from app.budget import MemoryBudget
from app.commit import _append
from app.config import load_settings
from app.parse import parse_transactions
from app.prepare import Preparer
from app.stats import Stats
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


def batches(producer: AIOKafkaProducer, prepared: list[Any]) -> int:
    """Every record appended to batch builders as app/commit.py does; how many batches."""
    count = 0
    for one in prepared:
        batch = producer.create_batch()
        for r in one.records:
            if not _append(batch, r):
                batch, count = producer.create_batch(), count + 1
                _append(batch, r)
        count += 1
    return count


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
    records = sum(len(p.records) for p in prepared)
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
