"""The service, instrumented: ``python -m bench.probe`` takes ``python -m app``'s settings.

A measuring aid for the benchmark's findings, not part of the service: it wraps (in
this process only) the partition task's transaction steps and aiokafka's
transactional request handlers, runs the unchanged service, and on exit prints
``PROBE {json}``: where each transaction's time went, how long each partition
waited for its next prepared record, and how often the broker answered "retry".

It can also try a proposed change to the service before anyone edits app/:
- ``PROBE_LINGER_MS=N``: the producers' linger_ms (the service uses 5).
- ``PROBE_TIMING=0``: no timing wrappers, only the count of retry answers.
"""

from __future__ import annotations

import atexit
import collections
import functools
import os
import sys
import time

import orjson
from aiokafka import AIOKafkaProducer

from app import __main__ as service_main
from app.kafka import clients
from app.kafka import committer as commit
from bench.baselines import RETRIES, count_retries

PHASES: dict[str, list[float]] = collections.defaultdict(list)
LAST_END: dict[int, float] = {}


def timed(name: str, method):
    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return await method(*args, **kwargs)
        finally:
            PHASES[name].append(time.perf_counter() - started)
    return wrapper


def commit_wrapper(method):
    """Time each commit, and the gap before it (waiting for a prepared record)."""
    @functools.wraps(method)
    async def wrapper(self, producer, offsets, records):
        (partition,) = (tp.partition for tp in offsets)
        started = time.perf_counter()
        if partition in LAST_END:
            PHASES["gap_between_transactions"].append(started - LAST_END[partition])
        try:
            return await method(self, producer, offsets, records)
        finally:
            LAST_END[partition] = time.perf_counter()
            PHASES["transaction"].append(LAST_END[partition] - started)
    return wrapper


def with_linger(linger_ms: int) -> type[AIOKafkaProducer]:
    class Producer(AIOKafkaProducer):
        def __init__(self, **options) -> None:
            super().__init__(**{**options, "linger_ms": linger_ms})
    return Producer


def install() -> None:
    if "PROBE_LINGER_MS" in os.environ:
        clients.AIOKafkaProducer = with_linger(int(os.environ["PROBE_LINGER_MS"]))
    count_retries()
    if os.environ.get("PROBE_TIMING") == "0":
        return  # count the broker's "retry" answers only, with no wrapper in the loop
    committer = commit.ExactlyOnceCommitter
    committer.commit = commit_wrapper(committer.commit)  # type: ignore[method-assign]
    commit.send_all = timed("send_all_and_acks", commit.send_all)
    for name in ("send_offsets_to_transaction", "commit_transaction"):
        setattr(AIOKafkaProducer, name, timed(name, getattr(AIOKafkaProducer, name)))


def summary() -> dict:
    out = {}
    for name, values in PHASES.items():
        values = sorted(values)
        out[name] = {"n": len(values), "mean_ms": round(1000 * sum(values) / len(values), 2),
                     "p50_ms": round(1000 * values[len(values) // 2], 2),
                     "p90_ms": round(1000 * values[int(len(values) * 0.9)], 2)}
    return {"phases": out, "retries": dict(RETRIES)}


def main() -> int:
    install()
    atexit.register(lambda: print("PROBE " + orjson.dumps(summary()).decode(), flush=True))
    return service_main.main()


if __name__ == "__main__":
    sys.exit(main())
