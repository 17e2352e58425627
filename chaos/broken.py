"""A deliberately broken copier, to prove the chaos checker can fail. Never a model.

``python -m chaos.broken`` takes the service's settings from the same environment
variables and builds the same records (``app.files.prepare``: downloads with retries,
parsing, output headers, dead letters), so the chaos workload and checker apply
unchanged. Only its Kafka loop is wrong, on purpose, as ``BROKEN_MODE`` says:

- ``autocommit`` (default): transactional outputs, but the consumer auto-commits
  its offsets every second, outside the transactions. A kill -9 then redoes what
  was written since the last auto-commit (duplicates) and skips what was fetched
  but not yet written (lost).
- ``pod-txn-id``: offsets inside the transaction, as they should be, but one
  transactional id per process instead of per input partition. Nothing fences a
  copier that lost a partition (a rebalance, a zombie), so the old and the new
  owner both commit it (duplicates).

It aborts ``TEST_ABORT_RATE`` of its transactions after the sends, like the
service, so aborted records exist in its log too. It logs the events the chaos
harness reads from the service (consuming, assigned, revoked, fenced, task_failed,
aborted, stopped with its counts).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import signal
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import InvalidProducerEpoch, ProducerFenced

from app.config import Settings, load_settings
from app.files.budget import MemoryBudget
from app.files.fetch import Downloader, DownloadLimits
from app.files.prepare import Preparer
from app.ops import log as app_log
from app.ops.stats import Stats
from chaos.copier import abort_rate

log = logging.getLogger("chaos.broken")
MODES = ("autocommit", "pod-txn-id")
FENCED = (ProducerFenced, InvalidProducerEpoch)


class _LogAssignments(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.held: set[int] = set()

    async def on_partitions_revoked(self, revoked) -> None:
        self.held -= {tp.partition for tp in revoked}
        log.info("partitions revoked", extra={
            "event": "revoked", "partitions": sorted(tp.partition for tp in revoked)})

    async def on_partitions_assigned(self, assigned) -> None:
        self.held |= {tp.partition for tp in assigned}
        log.info("partitions assigned", extra={
            "event": "assigned", "partitions": sorted(tp.partition for tp in assigned)})


class _Writer:
    """Writes each prepared record in a transaction of its own, as ``mode`` says (wrongly),
    on one producer per process; a failed transaction gets a new producer and a retry."""

    def __init__(self, settings: Settings, mode: str) -> None:
        self.settings = settings
        self.mode = mode
        self.totals: collections.Counter[str] = collections.Counter()
        # WRONG: one transactional id per process, not per input partition.
        self.transactional_id = f"broken-{settings.group_id}-{settings.pod_name}"
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """A fresh producer, started; retried while the broker is away."""
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap_servers,
                transactional_id=self.transactional_id, linger_ms=5)
            try:
                await producer.start()
                self.producer = producer
                return
            except Exception as err:  # noqa: BLE001
                log.warning("producer start failed: %r", err,
                            extra={"event": "waiting_for_kafka"})
                await _quietly(producer.stop())
                await asyncio.sleep(1)

    async def stop(self) -> None:
        if self.producer is not None:
            await _quietly(self.producer.stop())

    async def write(self, tp, record, prepared) -> None:
        while True:
            try:
                if await self._transaction(tp, record, prepared):
                    return
            except Exception as exc:  # noqa: BLE001
                event = "fenced" if isinstance(exc, FENCED) else "task_failed"
                log.warning("transaction failed, new producer: %r", exc,
                            extra={"event": event, "partition": tp.partition})
                self.totals["restarts"] += 1
                await self.stop()
                await asyncio.sleep(0.5)
                await self.start()

    async def _transaction(self, tp, record, prepared) -> bool:
        """One transaction of ``prepared``'s records; False if it was aborted on purpose."""
        producer = self.producer
        assert producer is not None
        await producer.begin_transaction()
        for out in prepared.each_record():
            await producer.send(out.topic, out.value, key=out.key, headers=out.headers)
        if self.mode == "pod-txn-id":
            await producer.send_offsets_to_transaction({tp: record.offset + 1},
                                                       self.settings.group_id)
        if random.random() < abort_rate(os.environ):
            await producer.abort_transaction()
            self.totals["aborted"] += 1
            log.info("transaction aborted (TEST_ABORT_RATE)",
                     extra={"event": "aborted", "partition": tp.partition})
            return False
        await producer.commit_transaction()
        self.totals["committed"] += 1
        self.totals["outputs"] += prepared.count
        self.totals["dead_lettered"] += prepared.dead_lettered
        return True


def _consumer(settings: Settings, mode: str) -> tuple[AIOKafkaConsumer, _LogAssignments]:
    """The group's consumer; with ``autocommit`` its offsets commit on a timer (WRONG)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, group_id=settings.group_id,
        group_instance_id=settings.pod_name, isolation_level="read_committed",
        enable_auto_commit=(mode == "autocommit"), auto_commit_interval_ms=1000,
        auto_offset_reset="earliest", session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=min(3000, settings.session_timeout_ms // 3), max_poll_records=50)
    assignments = _LogAssignments()
    consumer.subscribe([settings.input_topic], listener=assignments)
    return consumer, assignments


async def _poll(consumer: AIOKafkaConsumer) -> dict:
    try:
        return await consumer.getmany(timeout_ms=200, max_records=50)
    except Exception as exc:  # noqa: BLE001 - ride through broker restarts
        log.warning("poll failed: %r", exc)
        await asyncio.sleep(1)
        return {}


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def main() -> int:
    settings = load_settings([], os.environ)
    app_log.setup(settings.log_level, settings.log_format)
    mode = os.environ.get("BROKEN_MODE", "autocommit")
    if mode not in MODES:
        print(f"chaos.broken: BROKEN_MODE must be one of {MODES}", file=sys.stderr)
        return 2
    stop = _stop_event()
    downloader = Downloader(DownloadLimits.from_settings(settings))
    await downloader.start()
    preparer = Preparer(settings, downloader, MemoryBudget(settings.max_buffered_bytes), Stats())
    consumer, assignments = _consumer(settings, mode)
    writer = _Writer(settings, mode)
    await consumer.start()
    await writer.start()
    log.info("consuming", extra={"event": "consuming", "mode": mode, "pod": settings.pod_name})
    try:
        while not stop.is_set():
            for tp, records in (await _poll(consumer)).items():
                ready = await asyncio.gather(*(preparer.prepare(r) for r in records))
                for record, prepared in zip(records, ready, strict=True):
                    await writer.write(tp, record, prepared)
    finally:
        await _quietly(consumer.stop())
        await writer.stop()
        await downloader.close()
    counts = {k: writer.totals[k] for k in ("committed", "dead_lettered", "outputs", "aborted",
                                             "retries", "restarts")}
    log.info("stopped", extra={"event": "stopped", **counts,
                               "partitions_held": len(assignments.held)})
    return 0


async def _quietly(aw) -> None:
    try:
        await aw
    except Exception:  # noqa: BLE001
        pass


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
