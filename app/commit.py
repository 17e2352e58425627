"""The commit path: one input partition's outputs and offset, written under one guarantee.

A committer runs the whole protocol for one commit and reports how it ended; it
never retries, logs or counts. What to do next is the partition task's decision:

    DONE     outputs and offset are committed
    RETRY    nothing of it is visible (the transaction was aborted, or at least once:
             the offset was not committed): the same records may be tried again
    FENCED   another producer owns this partition's transactional id, or the group
             refused the offsets (KIP-447: this consumer lost its membership): drop the task
    TIMED_OUT  fenced after the transaction outlived TRANSACTION_TIMEOUT_MS: the
             coordinator aborted it (a record too big to commit in time, or a stall)
    UNKNOWN  the commit was sent and its answer lost: it may have been applied, so
             never abort it; a new producer's init settles it, the committed offset tells
    FATAL    the producer is unusable: replace it and resume from the committed offset

``make_committer`` picks the implementation for ``PROCESSING_GUARANTEE`` once, at start.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition

from app.config import Settings
from app.errors import Kind, classify
from app.kafka.protocol.errors import GROUP_FENCING, TransactionAbortableError
from app.records import FileOutputs, Headers, Output, index_headers

_PARTITIONER = DefaultPartitioner()
SEND_WINDOW_BYTES = 8 * 1024 * 1024
Offsets = Mapping[TopicPartition, int]


class Outcome(enum.Enum):
    DONE = "done"
    RETRY = "retry"
    FENCED = "fenced"
    TIMED_OUT = "timed_out"
    UNKNOWN = "unknown"
    FATAL = "fatal"


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    cause: BaseException | None = None
    aborted: bool = False  # a transaction was rolled back (exactly once only)

    @property
    def refused(self) -> bool:
        """The broker refused an output record (too large): retrying cannot help."""
        return self.cause is not None and classify(self.cause) is Kind.POISON


DONE = Result(Outcome.DONE)


class Committer(Protocol):
    async def commit(self, producer: AIOKafkaProducer, offsets: Offsets,
                     records: Sequence[Output]) -> Result: ...


class ExactlyOnceCommitter:
    """begin, every send checked, send_offsets_to_transaction, commit; abort on failure."""

    transactional = True

    def __init__(self, group_id: str, transaction_timeout_s: float = float("inf")) -> None:
        self.group_id = group_id
        self.transaction_timeout_s = transaction_timeout_s

    async def commit(self, producer: AIOKafkaProducer, offsets: Offsets,
                     records: Sequence[Output]) -> Result:
        started = time.monotonic()
        result = await self._commit(producer, offsets, records)
        if (result.outcome is Outcome.FENCED
                and time.monotonic() - started >= self.transaction_timeout_s):
            return Result(Outcome.TIMED_OUT, result.cause)
        return result

    async def _commit(self, producer: AIOKafkaProducer, offsets: Offsets,
                      records: Sequence[Output]) -> Result:
        try:
            await producer.begin_transaction()
            # The offsets join the transaction while its records are in flight (one
            # round trip less); nothing commits before every send's result is checked.
            await send_all(producer, records, meanwhile=functools.partial(
                producer.send_offsets_to_transaction, dict(offsets), self.group_id))
        except Exception as exc:
            return await _abort(producer, exc)
        try:
            await producer.commit_transaction()
        except Exception as exc:
            fenced = classify(exc) is Kind.FENCED
            return Result(Outcome.FENCED if fenced else Outcome.UNKNOWN, exc)
        return DONE


async def _abort(producer: AIOKafkaProducer, cause: BaseException) -> Result:
    kind = classify(cause)
    # KIP-447: the group refused the offsets of a consumer that lost its membership.
    # The producer still works: abort, so nothing of it waits for the timeout.
    group_fenced = isinstance(cause, GROUP_FENCING)
    if kind is Kind.FENCED:
        return Result(Outcome.FENCED, cause)
    if kind is Kind.FATAL and not (group_fenced or isinstance(cause, TransactionAbortableError)):
        return Result(Outcome.FATAL, cause)
    try:
        await producer.abort_transaction()
    except Exception as exc:
        fenced = classify(exc) is Kind.FENCED
        return Result(Outcome.FENCED if fenced else Outcome.FATAL, exc)
    return Result(Outcome.FENCED if group_fenced else Outcome.RETRY, cause, aborted=True)


class AtLeastOnceCommitter:
    """The outputs, then the consumer's offset commit: a crash between them repeats outputs.

    A baseline for benchmarks, not the product's guarantee."""

    transactional = False

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer

    async def commit(self, producer: AIOKafkaProducer, offsets: Offsets,
                     records: Sequence[Output]) -> Result:
        try:
            await send_all(producer, records)
            await self.consumer.commit(dict(offsets))
        except Exception as exc:
            kind = classify(exc)
            if kind is Kind.FENCED:
                return Result(Outcome.FENCED, exc)
            return Result(Outcome.FATAL if kind is Kind.FATAL else Outcome.RETRY, exc)
        return DONE


def make_committer(settings: Settings, consumer: AIOKafkaConsumer
                   ) -> ExactlyOnceCommitter | AtLeastOnceCommitter:
    if settings.processing_guarantee == "exactly_once":
        return ExactlyOnceCommitter(settings.group_id, settings.transaction_timeout_ms / 1000)
    return AtLeastOnceCommitter(consumer)


async def send_all(producer: AIOKafkaProducer, records: Sequence[Output],
                   meanwhile: Callable[[], Awaitable[None]] | None = None) -> None:
    """Every record, in order, packed into as few record batches as fit; every result checked.

    One future and one partitioner call per batch instead of per record. The
    partition is the one aiokafka's default partitioner would pick for the key.
    ``meanwhile`` runs once every batch is handed over, before any result is awaited.
    """
    sent: list[asyncio.Future] = []
    try:
        await _send_batches(producer, records, sent)
        if meanwhile is not None:
            await meanwhile()
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


async def _send_batches(producer: AIOKafkaProducer, records: Sequence[Output],
                        sent: list[asyncio.Future]) -> None:
    batches = _Batches(producer, sent)
    for r in records:
        if isinstance(r, FileOutputs):
            await batches.add_file(r)
            continue
        where = r.partition if r.partition is not None else await batches.partition(r.topic, r.key)
        await batches.add(r.topic, where, r.key, r.value, r.headers)
    await batches.send_open()


class _Batches:
    """A transaction's open record batches, one per output partition: full ones go to
    aiokafka (through the send window) and a new one takes their place."""

    def __init__(self, producer: AIOKafkaProducer, sent: list[asyncio.Future]) -> None:
        self.producer, self.sent, self.window = producer, sent, _SendWindow()
        self.open: dict[tuple[str, int], Any] = {}
        self.chosen: dict[tuple[str, bytes | None], int] = {}

    async def partition(self, topic: str, key: bytes | None) -> int:
        where = self.chosen.get((topic, key))
        if where is None:
            where = self.chosen[topic, key] = await _partition_for(self.producer, topic, key)
        return where

    async def add(self, topic: str, where: int, key: bytes | None, value: bytes | None,
                  headers: Headers) -> None:
        batch = self.open.get((topic, where))
        if batch is None or batch.append(key=key, value=value, timestamp=None,
                                         headers=headers) is None:
            batch = await self._next(topic, where, batch)
            batch.append(key=key, value=value, timestamp=None, headers=headers)

    async def add_file(self, out: FileOutputs) -> None:
        """The hot path of big files: one partition lookup, and one headers list reused
        for every record (a record batch copies the headers as it appends)."""
        topic, key = out.topic, out.key
        where = await self.partition(topic, key)
        batch = self.open.get((topic, where))
        if batch is None:
            batch = await self._next(topic, where, None)
        headers: Headers = [*out.shared, out.count, out.count]
        at = len(out.shared)
        for index, value in zip(index_headers(len(out.values)), out.values, strict=True):
            headers[at] = index
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                batch = await self._next(topic, where, batch)
                batch.append(key=key, value=value, timestamp=None, headers=headers)

    async def _next(self, topic: str, where: int, full: Any) -> Any:
        if full is not None:
            self.sent.append(await self.window.send(self.producer, full, topic, where))
        batch = self.open[topic, where] = self.producer.create_batch()
        return batch

    async def send_open(self) -> None:
        for (topic, where), batch in self.open.items():
            self.sent.append(await self.window.send(self.producer, batch, topic, where))


class _SendWindow:
    """At most SEND_WINDOW_BYTES of a transaction's batches wait in aiokafka at once.

    aiokafka has no bound on what its accumulator holds: a big file's serialized
    batches, all queued at once, are a second copy of the file beside its records."""

    def __init__(self) -> None:
        self._waiting: collections.deque[tuple[asyncio.Future, int]] = collections.deque()
        self._bytes = 0

    async def send(self, producer: AIOKafkaProducer, batch: Any, topic: str,
                   partition: int) -> asyncio.Future:
        size = batch.size()
        batch.close()  # complete: aiokafka sends a closed batch at once, without linger_ms
        future = await producer.send_batch(batch, topic, partition=partition)
        self._waiting.append((future, size))
        self._bytes += size
        while self._bytes > SEND_WINDOW_BYTES:
            oldest, oldest_size = self._waiting.popleft()
            if not oldest.done():
                await asyncio.wait([oldest])  # its outcome is checked with the others'
            self._bytes -= oldest_size
        return future


async def _partition_for(producer: AIOKafkaProducer, topic: str, key: bytes | None) -> int:
    """The partition aiokafka's default partitioner would pick (random for no key)."""
    partitions = sorted(await producer.partitions_for(topic))
    return _PARTITIONER(key, partitions, partitions)


def _ignore_outcome(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
