"""One input partition: its transactional producer, its prefetch window, its commits.

Lifecycle, driven by the supervisor in service.py:

    start()      init the producer (this fences and settles any previous owner's
                 transaction), read the committed offset, seek, begin running
    deliver()    records from the consumer's poll loop
    close(t)     stop taking records, let the transaction in flight finish (or give
                 up at t), stop the producer
    terminate()  the same, at once

A task lives once. When it ends on its own (fenced, or its producer failed) the
supervisor decides whether to start a new one; the new one resumes from the
committed offset, so nothing the old one held in memory matters.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord, TopicPartition

from app.config import Settings
from app.errors import Kind, PoisonError, TransientError, classify
from app.prepare import OutRecord, Prepared, Preparer, backoff
from app.stats import Stats

log = logging.getLogger(__name__)
_PARTITIONER = DefaultPartitioner()


class TaskFenced(Exception):
    """Another producer took this partition's transactional id."""


class TaskFailed(Exception):
    """The producer is unusable or a commit's outcome is unknown: start afresh."""


class PartitionTask:
    def __init__(self, tp: TopicPartition, settings: Settings, consumer: AIOKafkaConsumer,
                 preparer: Preparer, stats: Stats,
                 make_producer: Callable[[int], AIOKafkaProducer]) -> None:
        self.tp = tp
        self.settings = settings
        self.consumer = consumer
        self.preparer = preparer
        self.stats = stats
        self.transactional_id = settings.transactional_id(tp.partition)
        self._exactly_once = settings.processing_guarantee == "exactly_once"
        self._make_producer = make_producer
        self._producer: AIOKafkaProducer | None = None
        self._inbox: collections.deque[ConsumerRecord] = collections.deque()
        self._window: collections.deque[tuple[ConsumerRecord, asyncio.Task[Prepared]]] = (
            collections.deque())
        self._next_offset = -1   # the offset after the last record received
        self.committed_offset = -1  # the offset after the last record committed
        self._accepting = False
        self._closing = False
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self.ready = False       # producer initialised and position set

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        self._pause()
        self._producer = self._make_producer(self.tp.partition)
        # Order matters: init_transactions first, so the previous owner's
        # transaction is committed or aborted before we read the offset it wrote.
        await self._producer.start()
        committed = await self.consumer.committed(self.tp)
        if committed is None:
            committed = (await self.consumer.beginning_offsets([self.tp]))[self.tp]
        if self._closing:
            return
        self.consumer.seek(self.tp, committed)
        self._next_offset = self.committed_offset = committed
        self._accepting = True
        self.ready = True
        self._resume()
        self._runner = asyncio.create_task(self._run(), name=f"partition-{self.tp.partition}")
        log.info("partition task started",
                 extra=self._ctx(event="task_started", offset=committed))

    @property
    def running(self) -> bool:
        return self._runner is not None and not self._runner.done()

    async def wait(self) -> None:
        """Until the task ends; raises TaskFenced or TaskFailed if it ended on its own."""
        if self._runner is not None:
            await self._runner

    async def close(self, timeout: float) -> None:
        self._stop_taking()
        if self._runner is not None and not self._runner.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._runner), timeout)
            except (TimeoutError, TaskFenced, TaskFailed):
                pass
            except Exception:
                log.exception("partition task failed while closing", extra=self._ctx())
        await self.terminate()

    async def terminate(self) -> None:
        self._stop_taking()
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
        if self._runner is not None:
            with contextlib.suppress(BaseException):
                await self._runner
        for _, pending in self._window:
            self._discard(pending)
        self._window.clear()
        if self._producer is not None:
            # A transaction left open here is settled by the next owner's
            # init_transactions (or the transaction timeout); stop without waiting on it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), self.settings.shutdown_timeout_s)
            self._producer = None
        self.ready = False

    def _stop_taking(self) -> None:
        self._closing = True
        self._accepting = False
        self._pause()
        self._inbox.clear()
        for _, pending in list(self._window)[1:]:
            pending.cancel()
        if self._window and not self._window[0][1].done():
            self._window[0][1].cancel()
        self._wake.set()

    def _discard(self, pending: asyncio.Task[Prepared]) -> None:
        pending.cancel()
        if pending.done() and not pending.cancelled() and pending.exception() is None:
            self.preparer.budget.give_back(pending.result().nbytes)

    # -- records in ---------------------------------------------------------------

    def deliver(self, records: list[ConsumerRecord]) -> None:
        if not self._accepting:
            return
        for record in records:
            # Anything below the position we sought to is a leftover of an old fetch.
            if record.offset >= self._next_offset:
                self._inbox.append(record)
                self._next_offset = record.offset + 1
        self._fill()

    @property
    def pending(self) -> int:
        return len(self._inbox) + len(self._window)

    def _fill(self) -> None:
        """Start preparing records, up to the prefetch depth, in offset order."""
        while self._inbox and len(self._window) < self.settings.prefetch_per_partition:
            record = self._inbox.popleft()
            self._window.append((record, asyncio.create_task(self.preparer.prepare(record))))
        if self._window:
            self._wake.set()
        if self.pending >= self.settings.prefetch_per_partition:
            self._pause()
        else:
            self._resume()

    def _pause(self) -> None:
        if self.tp in self.consumer.assignment():
            self.consumer.pause(self.tp)

    def _resume(self) -> None:
        if self._accepting and self.tp in self.consumer.assignment():
            self.consumer.resume(self.tp)

    # -- transactions, strictly in offset order -----------------------------------

    async def _run(self) -> None:
        while not self._closing:
            if not self._window:
                self._wake.clear()
                await self._wake.wait()
                continue
            record, pending = self._window[0]
            await asyncio.wait([pending])
            if pending.cancelled():
                break  # closing
            prepared = pending.result()
            if not await self._commit(record, prepared):
                break  # closing while retrying
            self._window.popleft()
            self.preparer.budget.give_back(prepared.nbytes)
            self._fill()

    async def _commit(self, record: ConsumerRecord, prepared: Prepared) -> bool:
        """Commit the record's outputs and offset in one transaction, retrying."""
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._transaction(record, prepared)
                self._count(prepared)
                return True
            except _CommitError as exc:
                cause = exc.__cause__ or exc
                if classify(cause) is Kind.FENCED:
                    raise TaskFenced(repr(cause)) from cause
                # The commit may have been applied: never abort it; a new
                # producer's init settles it and the committed offset tells.
                raise TaskFailed(f"commit outcome unknown: {cause!r}") from cause
            except Exception as exc:
                kind = classify(exc)
                if kind is Kind.FENCED:
                    raise TaskFenced(repr(exc)) from exc
                if kind is Kind.FATAL:
                    raise TaskFailed(f"producer failed: {exc!r}") from exc
                await self._abort(exc)
                if kind is Kind.POISON and not prepared.dead_lettered:
                    prepared = self._dead_letter(record, prepared, exc)
                    continue
            if self._closing:
                return False
            self.stats.retried("transaction")
            await asyncio.sleep(backoff(attempt, self.settings.retry_backoff_s,
                                        self.settings.retry_backoff_max_s))

    async def _transaction(self, record: ConsumerRecord, prepared: Prepared) -> None:
        producer = self._producer
        assert producer is not None
        started = time.monotonic()
        offsets = {self.tp: record.offset + 1}
        if not self._exactly_once:
            await self._send_all(producer, prepared)
            await self.consumer.commit(offsets)  # after the outputs: at least once
        else:
            await producer.begin_transaction()
            await self._send_all(producer, prepared)
            await producer.send_offsets_to_transaction(offsets, self.settings.group_id)
            if self._inject_abort():
                raise TransientError("injected_abort", "TEST_ABORT_RATE aborted this transaction")
            try:
                await producer.commit_transaction()
            except Exception as exc:
                raise _CommitError() from exc
        self.committed_offset = record.offset + 1
        self.stats.commit_seconds.observe(time.monotonic() - started)

    async def _send_all(self, producer: AIOKafkaProducer, prepared: Prepared) -> None:
        """Every output record, in order, packed into as few record batches as fit.

        A large file is thousands of records: one future and one partitioner call per
        batch instead of per record (the S2 profile's largest costs). The partition
        is the one aiokafka's default partitioner would pick for the key.
        """
        sent: list[asyncio.Future] = []
        open_batches: dict[tuple[str, int], Any] = {}
        chosen: dict[tuple[str, bytes | None], int] = {}
        try:
            for r in prepared.records:
                where = chosen.get((r.topic, r.key))
                if where is None:
                    where = chosen[r.topic, r.key] = await _partition_for(producer, r.topic, r.key)
                batch = open_batches.get((r.topic, where))
                if batch is not None and _append(batch, r):
                    continue
                if batch is not None:  # full: send it, start the next
                    sent.append(await producer.send_batch(batch, r.topic, partition=where))
                batch = open_batches[r.topic, where] = producer.create_batch()
                _append(batch, r)  # an empty batch takes any one record
            for (topic, where), batch in open_batches.items():
                sent.append(await producer.send_batch(batch, topic, partition=where))
            # aiokafka would commit even if a send failed: every result must be checked.
            for future in sent:
                if not future.done():
                    await asyncio.wait([future])
                failure = future.exception()
                if failure is not None:
                    raise failure
        except BaseException:
            for future in sent:  # their outcome no longer matters; the abort covers them
                future.add_done_callback(_ignore_outcome)
            raise

    def _inject_abort(self) -> bool:
        """Testing aid (off by default): lets chaos tests prove aborts stay invisible."""
        rate = self.settings.test_abort_rate
        return rate > 0 and random.random() < rate

    async def _abort(self, cause: BaseException) -> None:
        if not self._exactly_once:
            return  # nothing to abort: outputs may be written again (at least once)
        self.stats.aborted()
        log.warning("transaction aborted, will retry: %r", cause, extra=self._ctx(event="aborted"))
        assert self._producer is not None
        try:
            await self._producer.abort_transaction()
        except Exception as exc:
            raise TaskFailed(f"abort failed: {exc!r}") from exc

    def _dead_letter(self, record: ConsumerRecord, prepared: Prepared,
                     exc: BaseException) -> Prepared:
        self.preparer.budget.give_back(prepared.nbytes)
        error = PoisonError("record_too_large", f"the broker refused an output record: {exc!r}")
        return self.preparer.dead_letter(record, None, error, prepared.attempts)

    def _count(self, prepared: Prepared) -> None:
        if prepared.dead_lettered:
            self.stats.dead_lettered()
        else:
            self.stats.committed(len(prepared.records))

    def _ctx(self, **extra: Any) -> dict[str, Any]:
        return {"partition": self.tp.partition, "transactional_id": self.transactional_id,
                **extra}


async def _partition_for(producer: AIOKafkaProducer, topic: str, key: bytes | None) -> int:
    """The partition aiokafka's default partitioner would pick (random for no key)."""
    partitions = sorted(await producer.partitions_for(topic))
    return _PARTITIONER(key, partitions, partitions)


def _append(batch: Any, r: OutRecord) -> bool:
    return batch.append(key=r.key, value=r.value, timestamp=None, headers=r.headers) is not None


def _ignore_outcome(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


class _CommitError(Exception):
    """Wraps an exception raised by commit_transaction."""
