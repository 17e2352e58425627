"""Baselines, each run as its own process: ``python -m bench.baselines '<json config>'``.

- naive: the original design's loop, written plainly: one record at a time (poll,
  download, parse, begin, send, send offsets, commit, next), one transactional
  producer, aiokafka's defaults, the project's own fetch and parse modules.
- r1:    the client's limit: the same output records produced with plain aiokafka
  (idempotent, no transactions), one producer per partition; files parsed before
  the clock starts.
- r2:    the design's ceiling: one transaction per input record (begin, send the
  file's records, send_offsets, commit) with no HTTP, one producer per partition,
  all partitions concurrently. With ``committer`` (r2_committer) each transaction goes
  through the service's own committer (app/kafka/committer.py) instead of plain calls.

The last line of output is ``RESULT {json}``. Producer-side retries are counted by
wrapping aiokafka's transaction handlers (measured, in this process only).
"""

from __future__ import annotations

import asyncio
import collections
import sys
import time
from typing import NamedTuple

import orjson
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.producer import sender

from app.files.fetch import Downloader, DownloadLimits
from app.files.parse import parse_transactions
from app.files.prepare import source_headers
from app.files.records import OutRecord
from app.kafka.committer import ExactlyOnceCommitter, Outcome
from bench.watch import STEADY
from bench.workload import Spec, make_files, url

RETRIES: collections.Counter[str] = collections.Counter()
# The service's producer options (app/kafka/clients.py), for R1 and R2.
SERVICE_PRODUCER = {"enable_idempotence": True, "linger_ms": 5, "max_batch_size": 256 * 1024}


class Source(NamedTuple):
    topic: str
    partition: int
    offset: int


def count_retries() -> None:
    """Count every transactional request that came back asking to be retried."""
    for name in ("AddPartitionsToTxnHandler", "AddOffsetsToTxnHandler",
                 "TxnOffsetCommitHandler", "EndTxnHandler"):
        handler = getattr(sender, name)
        original = handler.handle_response

        def wrapped(self, resp, _original=original, _name=name):
            backoff = _original(self, resp)
            if backoff is not None:
                RETRIES[f"{_name.removesuffix('Handler')} backoff {backoff * 1000:.0f}ms"] += 1
            return backoff
        handler.handle_response = wrapped


def out_records(src: Source, link: str, values: list[bytes]) -> list[tuple]:
    """(key, value, headers) as the service writes them (app/files/prepare.py)."""
    base, count = source_headers(src, link), str(len(values)).encode()  # type: ignore[arg-type]
    key = link.encode()
    return [(key, v, [*base, ("index", str(i).encode()), ("count", count)])
            for i, v in enumerate(values)]


def parsed_values(spec: Spec) -> list[list[bytes]]:
    files = make_files(spec)
    values = []
    for n, body in enumerate(files.bodies):
        values.append([item.value for item in parse_transactions(body, max_items=10**7)])
        files.bodies[n] = b""
    return values


async def send_all(producer: AIOKafkaProducer, topic: str, records: list[tuple]) -> None:
    futures = [await producer.send(topic, v, key=k, headers=h) for k, v, h in records]
    for result in await asyncio.gather(*futures, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result


# -- naive -----------------------------------------------------------------------------

async def naive(cfg: dict) -> dict:
    consumer = AIOKafkaConsumer(cfg["input"], bootstrap_servers=cfg["bootstrap"],
                                group_id=cfg["group"], enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=cfg["bootstrap"],
                                transactional_id=f"{cfg['group']}-naive")
    downloader = Downloader(DownloadLimits(allow_private_networks=True))
    await downloader.start()
    await producer.start()
    await consumer.start()
    try:
        for _ in range(cfg["limit"]):
            msg = await consumer.getone()
            link = msg.value.decode()
            items = parse_transactions(await downloader.download(link), max_items=10**6)
            records = out_records(Source(msg.topic, msg.partition, msg.offset), link,
                                  [item.value for item in items])
            await producer.begin_transaction()
            await send_all(producer, cfg["output"], records)
            await producer.send_offsets_to_transaction(
                {TopicPartition(msg.topic, msg.partition): msg.offset + 1}, cfg["group"])
            await producer.commit_transaction()
    finally:
        await consumer.stop()
        await producer.stop()
        await downloader.close()
    return {}


# -- R2 --------------------------------------------------------------------------------

async def r2(cfg: dict) -> dict:
    spec = Spec(**cfg["spec"])
    values = parsed_values(spec)
    producers = [AIOKafkaProducer(bootstrap_servers=cfg["bootstrap"],
                                  transactional_id=f"{cfg['group']}-r2-{p}",
                                  retry_backoff_ms=cfg["retry_backoff_ms"], **SERVICE_PRODUCER)
                 for p in range(spec.partitions)]
    await asyncio.gather(*(p.start() for p in producers))
    started = time.monotonic()
    try:
        await asyncio.gather(*(_r2_partition(cfg, spec, values, producer, p)
                               for p, producer in enumerate(producers)))
    finally:
        elapsed = time.monotonic() - started
        await asyncio.gather(*(p.stop() for p in producers))
    return {"self_timed_txn_per_s": spec.files / elapsed}


async def _r2_partition(cfg: dict, spec: Spec, values: list[list[bytes]],
                        producer: AIOKafkaProducer, partition: int) -> None:
    tp = TopicPartition(cfg["input"], partition)
    for offset, n in enumerate(range(partition, spec.files, spec.partitions)):
        records = out_records(Source(tp.topic, partition, offset), url(cfg["base"], n), values[n])
        if cfg.get("committer"):
            await _r2_committed(cfg, producer, {tp: offset + 1}, records)
            continue
        await producer.begin_transaction()
        if cfg.get("offsets_first"):  # the other order: AddOffsetsToTxn is the first request
            await producer.send_offsets_to_transaction({tp: offset + 1}, cfg["group"])
            await send_all(producer, cfg["output"], records)
        else:
            await send_all(producer, cfg["output"], records)
            await producer.send_offsets_to_transaction({tp: offset + 1}, cfg["group"])
        await producer.commit_transaction()


async def _r2_committed(cfg: dict, producer: AIOKafkaProducer, offsets: dict,
                        records: list[tuple]) -> None:
    """One transaction through the service's committer; it never retries, so R2 does."""
    outputs = [OutRecord(cfg["output"], k, v, h) for k, v, h in records]
    committer = ExactlyOnceCommitter(cfg["group"])
    while True:
        result = await committer.commit(producer, offsets, outputs)
        if result.outcome is Outcome.DONE:
            return
        if not result.aborted:
            raise RuntimeError(f"R2 transaction failed: {result}")


# -- R1 --------------------------------------------------------------------------------

async def r1(cfg: dict) -> dict:
    spec = Spec(**cfg["spec"])
    values = parsed_values(spec)
    producers = [AIOKafkaProducer(bootstrap_servers=cfg["bootstrap"], **SERVICE_PRODUCER)
                 for _ in range(spec.partitions)]
    await asyncio.gather(*(p.start() for p in producers))
    acked: list[tuple[float, int]] = []  # (when, messages) per file
    try:
        await asyncio.gather(*(_r1_partition(cfg, spec, values, producer, p, acked)
                               for p, producer in enumerate(producers)))
    finally:
        await asyncio.gather(*(p.stop() for p in producers))
    return steady_rates(sorted(acked))


def steady_rates(acked: list[tuple[float, int]]) -> dict:
    """Like bench.watch.rates: from the file that takes the total past 10% to the one past 90%."""
    total, so_far, marks = sum(m for _, m in acked), 0, []
    for files, (when, messages) in enumerate(acked, 1):
        so_far += messages
        marks.append((when, files, so_far))
    low = next(m for m in marks if m[2] >= STEADY[0] * total)
    high = next(m for m in marks if m[2] >= STEADY[1] * total)
    seconds = high[0] - low[0]
    return {"msgs_per_s": (high[2] - low[2]) / seconds, "files_per_s": (high[1] - low[1]) / seconds,
            "window_s": round(seconds, 3)}


async def _r1_partition(cfg: dict, spec: Spec, values: list[list[bytes]],
                        producer: AIOKafkaProducer, partition: int,
                        acked: list[tuple[float, int]]) -> None:
    window: collections.deque[asyncio.Task] = collections.deque()
    for offset, n in enumerate(range(partition, spec.files, spec.partitions)):
        records = out_records(Source(cfg["input"], partition, offset), url(cfg["base"], n),
                              values[n])
        window.append(asyncio.create_task(_r1_file(producer, cfg["output"], records, acked)))
        if len(window) >= 4:
            await window.popleft()
    for task in window:
        await task


async def _r1_file(producer: AIOKafkaProducer, topic: str, records: list[tuple],
                   acked: list[tuple[float, int]]) -> None:
    await send_all(producer, topic, records)
    acked.append((time.monotonic(), len(records)))


VARIANTS = {"naive": naive, "r1": r1, "r2": r2}


def main() -> None:
    cfg = orjson.loads(sys.argv[1])
    count_retries()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(VARIANTS[cfg["variant"]](cfg))
    result["retries"] = dict(RETRIES)
    print("RESULT " + orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
